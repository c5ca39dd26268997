"""Roles, API side: one permission class for every authenticated view, reading the role table
(`users.roles`). A view says which action each HTTP method is (`required_actions`); it never tests
a role itself.

Precedence (API.md): no or a bad credential is 401; another organization's object is 404 even
where the role would forbid the request (the object is looked up, in the organization's scope,
only on that refused path, so allowed requests pay nothing); then 403 `permission_denied`.
"""

from types import SimpleNamespace

from rest_framework.exceptions import NotFound
from rest_framework.permissions import SAFE_METHODS, BasePermission

from users.roles import ROLE_ACTIONS, Action, allows

DEFAULT_ACTIONS = dict.fromkeys(SAFE_METHODS, Action.READ)


def required_action(request, view) -> Action:
    """The action a request is: the view's `required_actions` for its method (a view may give a
    `"*"` default), else `read` for a safe method and `write` for any other.

    HEAD is GET without a body, so it is whatever GET is; OPTIONS only describes the endpoint
    (DRF's metadata checks the permission of each method it describes), so it is `read` unless a
    view names it. Left to a `"*"` default, a viewer allowed to GET a page got 403 for its HEAD.
    """
    actions = getattr(view, "required_actions", None) or {}
    method = request.method.upper()
    if method == "HEAD" and "HEAD" not in actions:
        method = "GET"
    if method in actions:
        return actions[method]
    if method == "OPTIONS":
        return Action.READ
    if "*" in actions:
        return actions["*"]
    return DEFAULT_ACTIONS.get(method, Action.WRITE)


class RolePermission(BasePermission):
    """Authenticated, and the credential's role allows what the request does."""

    code = "permission_denied"

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        role = getattr(request.auth, "role", None)
        action = required_action(request, view)
        if allows(role, action):
            return True
        self._not_found_first(view)
        self.message = f'The role "{role}" does not allow this ({action}).'
        return False

    @staticmethod
    def may_forbid(view, method: str) -> bool:
        """Whether some role is refused `method` on `view` (the schema documents a 403 there)."""
        action = required_action(SimpleNamespace(method=method), view)
        return not all(allows(role, action) for role in ROLE_ACTIONS)

    @staticmethod
    def _not_found_first(view) -> None:
        """A detail URL naming an object outside the organization is 404, whatever the role."""
        lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
        if not lookup or lookup not in getattr(view, "kwargs", {}) or not hasattr(view, "get_queryset"):
            return
        object_id = view.object_id() if hasattr(view, "object_id") else view.kwargs[lookup]
        if not view.get_queryset().filter(pk=object_id).exists():
            raise NotFound()
