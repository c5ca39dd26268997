"""Writes of accounts and organizations: registration and login, the organization's settings, its
members and its API keys. Domain errors only (`billing.exceptions`), whatever the caller; the API's
exception handler turns them into responses.

Every write to an organization's members starts by locking the organization's row, so two
concurrent changes of its owners queue, and "the last owner" is decided on a current count.
"""

from __future__ import annotations

import datetime
from http import HTTPStatus

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.exceptions import BillingError, BusinessRuleViolation
from users.models import API_KEY_ROLES, ApiKey, Membership, MemberToken, Organization, Role
from users.roles import Action, allows

User = get_user_model()

INVALID_CREDENTIALS = "Unable to log in with the provided credentials."


class RegistrationClosed(BillingError):
    """REGISTRATION_OPEN=0: this deployment takes no sign-ups."""

    code = "registration_closed"
    status_code = HTTPStatus.FORBIDDEN


class InvalidCredentials(BusinessRuleViolation):
    code = "invalid_credentials"


class RoleForbids(BillingError):
    """The caller's role does not allow this change (only an owner grants or removes `owner`)."""

    code = "permission_denied"
    status_code = HTTPStatus.FORBIDDEN


class LastOwner(BillingError):
    """An organization always keeps an owner."""

    code = "last_owner"


# --- accounts -----------------------------------------------------------------------------


def user_register(
    *, username: str, password: str, email: str = "", organization_name: str | None = None
) -> tuple[User, Organization]:
    """Create a user and an organization with that user as its owner, if this deployment takes
    sign-ups (REGISTRATION_OPEN); a username taken by a concurrent request is a 400 on `username`.

    `create_user` stores the username in NFKC form (`User.normalize_username`), which is the form
    `user_login` looks it up in: either spelling of a name reaches the same account.
    """
    if not settings.REGISTRATION_OPEN:
        raise RegistrationClosed("Registration is closed.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password, email=email)
            organization = organization_create(name=organization_name or user.username, owner=user)
    except IntegrityError:
        raise BusinessRuleViolation("A user with that username already exists.", field="username") from None
    return user, organization


@transaction.atomic
def organization_create(*, name: str, owner: User, **settings_fields) -> Organization:
    """A new organization with `owner` as its first owner."""
    organization = Organization(name=name, email=owner.email, **settings_fields)
    organization.check_fields()
    organization.save()
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    return organization


def user_login(
    *, request, username: str, password: str, organization: int | None = None
) -> tuple[MemberToken, str]:
    """Check the credentials and issue a new token bound to the caller's membership of
    `organization` (an id; default: the oldest membership).

    The username is normalized as register stored it (NFKC, `User.normalize_username`; Django's
    own login form does the same), so a fullwidth "nfvhahp" logs in the user registered as
    "nfvhahp". An unknown user and a wrong password get the same answer (Django's backend also runs
    the password hasher for unknown users, so their timing matches too). Not a member of the
    organization named is a 400 on `organization`, whether it exists or not.
    """
    username = User.normalize_username(username)
    user = authenticate(request=request, username=username, password=password)
    if user is None:
        raise InvalidCredentials(INVALID_CREDENTIALS, field="non_field_errors")
    memberships = Membership.objects.select_related("organization").filter(user=user)
    if organization is not None:
        membership = memberships.filter(organization_id=organization).first()
        if membership is None:
            raise BusinessRuleViolation("You are not a member of this organization.", field="organization")
    else:
        membership = memberships.order_by("created_at", "id").first()
        if membership is None:
            raise BusinessRuleViolation(
                "This user is not a member of any organization.", field="non_field_errors"
            )
    instance, token = MemberToken.objects.create(user=user, membership=membership)
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return instance, token


# --- the organization ------------------------------------------------------------------------

ORGANIZATION_FIELDS = (*Organization.PROFILE_FIELDS, *Organization.SETTINGS_FIELDS)


@transaction.atomic
def organization_update(*, organization_id: int, **changes) -> Organization:
    """Change an organization's profile and settings; only the fields given and different are
    written. Changing `invoice_prefix` keeps the sequence: the next number continues it."""
    unknown = set(changes) - set(ORGANIZATION_FIELDS)
    if unknown:
        raise TypeError(f"organization_update() got unexpected fields {sorted(unknown)}")
    organization = Organization.objects.select_for_update().get(pk=organization_id)
    changed = [name for name, value in changes.items() if getattr(organization, name) != value]
    if not changed:
        return organization
    for name in changed:
        setattr(organization, name, changes[name])
    organization.check_fields()
    organization.save(update_fields=[*changed, "updated_at"])
    return organization


# --- members ---------------------------------------------------------------------------------


def _lock_organization(organization_id: int) -> Organization:
    return Organization.objects.select_for_update().get(pk=organization_id)


def _check_role(role: str, *, field: str = "role", choices=Role.values) -> None:
    if role not in choices:
        raise BusinessRuleViolation(f'"{role}" is not a valid choice.', field=field)


def _may_touch_owners(
    organization_id: int, caller_role: str | None, caller_membership_id: int | None, *roles: str
) -> None:
    """Only an owner grants or takes away `owner`. Called with the organization locked: a member
    caller's role is read again there, so an owner demoted or removed by a request that committed
    while this one waited for the lock no longer acts as one (the role their token was
    authenticated with is from before). A key's role is its own, and never `owner`."""
    if Role.OWNER not in roles:
        return
    if caller_membership_id is not None:
        caller_role = (
            Membership.objects.filter(pk=caller_membership_id, organization_id=organization_id)
            .values_list("role", flat=True)
            .first()
        )
    if not allows(caller_role, Action.MANAGE_OWNERS):
        raise RoleForbids("Only an owner grants or removes the owner role.")


def _owner_count(organization_id: int) -> int:
    return Membership.objects.filter(organization_id=organization_id, role=Role.OWNER).count()


@transaction.atomic
def membership_add(
    *,
    organization_id: int,
    username: str,
    role: str,
    caller_role: str | None,
    caller_membership_id: int | None = None,
) -> Membership:
    """Add an existing user to the organization with `role`; a user who is already a member, or
    no such user, is a 400 on `username`. Only an owner adds an owner (403)."""
    _check_role(role)
    _lock_organization(organization_id)
    _may_touch_owners(organization_id, caller_role, caller_membership_id, role)
    user = User.objects.filter(username=User.normalize_username(username)).first()
    if user is None:
        raise BusinessRuleViolation("No user with this username.", field="username")
    if Membership.objects.filter(organization_id=organization_id, user=user).exists():
        raise BusinessRuleViolation("This user is already a member.", field="username")
    return Membership.objects.create(organization_id=organization_id, user=user, role=role)


def _lock_membership(organization_id: int, membership_id: int) -> Membership:
    _lock_organization(organization_id)
    return Membership.objects.select_related("user").get(organization_id=organization_id, pk=membership_id)


@transaction.atomic
def membership_change_role(
    *,
    organization_id: int,
    membership_id: int,
    role: str,
    caller_role: str | None,
    caller_membership_id: int | None = None,
) -> Membership:
    """Change a member's role. Only an owner grants or takes away `owner` (403); the last owner is
    never demoted (409 `last_owner`). The member's tokens act with the new role at once."""
    _check_role(role)
    membership = _lock_membership(organization_id, membership_id)
    _may_touch_owners(organization_id, caller_role, caller_membership_id, membership.role, role)
    if membership.role == role:
        return membership
    if membership.role == Role.OWNER and _owner_count(organization_id) <= 1:
        raise LastOwner("The last owner of an organization cannot be demoted; make another owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(
    *,
    organization_id: int,
    membership_id: int,
    caller_role: str | None,
    caller_membership_id: int | None = None,
) -> None:
    """Remove a member; their tokens for this organization go with the membership (they stop
    working at once). Only an owner removes an owner; the last owner is never removed (409)."""
    membership = _lock_membership(organization_id, membership_id)
    _may_touch_owners(organization_id, caller_role, caller_membership_id, membership.role)
    if membership.role == Role.OWNER and _owner_count(organization_id) <= 1:
        raise LastOwner("The last owner of an organization cannot be removed; make another owner first.")
    membership.delete()


# --- API keys --------------------------------------------------------------------------------


@transaction.atomic
def api_key_create(
    *,
    organization_id: int,
    name: str,
    role: str,
    expires_at: datetime.datetime | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """A new API key of the organization: (the row, the key). The key is returned this once; only
    its prefix and hash are stored. `owner` is never a key's role (400 on `role`)."""
    _check_role(role, choices=[r.value for r in API_KEY_ROLES])
    if expires_at is not None and expires_at <= timezone.now():
        raise BusinessRuleViolation("An expiry must be in the future.", field="expires_at")
    key, prefix, digest = ApiKey.generate()
    api_key = ApiKey.objects.create(
        organization_id=organization_id,
        name=name,
        prefix=prefix,
        digest=digest,
        role=role,
        expires_at=expires_at,
        created_by=created_by if isinstance(created_by, User) else None,
    )
    return api_key, key


@transaction.atomic
def api_key_revoke(*, organization_id: int, api_key_id: int) -> ApiKey:
    """Revoke a key: it stops working with the next request (authentication reads the row every
    time). The row stays, so what the key made still says who made it; revoking again changes
    nothing."""
    api_key = ApiKey.objects.select_for_update().get(organization_id=organization_id, pk=api_key_id)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key
