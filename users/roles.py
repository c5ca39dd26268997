"""What each role may do: the one table the API's permission class (`users.permissions`) and the
services read. No view or service tests a role by name.

An *action* is a kind of request; each view says which action each of its methods is (by default
`read` for GET/HEAD/OPTIONS and `write` for the rest), and a role allows a set of actions.
"""

from __future__ import annotations

from enum import StrEnum

from users.models import Role


class Action(StrEnum):
    READ = "read"  # read anything of the organization
    WRITE = "write"  # customers, invoices, payments, documents
    ADMINISTER = "administer"  # organization settings, members other than owners, API keys, webhooks
    MANAGE_OWNERS = "manage_owners"  # grant or remove the owner role


ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.MEMBER: frozenset({Action.READ, Action.WRITE}),
    Role.ADMIN: frozenset({Action.READ, Action.WRITE, Action.ADMINISTER}),
    Role.OWNER: frozenset({Action.READ, Action.WRITE, Action.ADMINISTER, Action.MANAGE_OWNERS}),
}

# From least to most: every role may do all that the roles before it may.
ROLE_ORDER = (Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER)


def allows(role: str | None, action: Action | str) -> bool:
    return role is not None and action in ROLE_ACTIONS.get(role, frozenset())
