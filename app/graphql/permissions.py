"""Who may resolve a field: signed in, OPERATOR and above, ADMIN."""

from typing import Any, ClassVar

from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from app.core.auth import has_role
from app.core.errors import PermissionDeniedError
from app.core.models import Role
from app.graphql.context import Info


class IsAuthenticated(BasePermission):
    """Any signed-in, active user (VIEWER and above); anonymous is UNAUTHENTICATED."""

    role: ClassVar[Role] = Role.VIEWER

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        """True when the user's role reaches `role`; raises UNAUTHENTICATED when anonymous."""
        user = await info.context.require_user()
        return has_role(user, self.role)

    def on_unauthorized(self) -> None:
        """Refuse with FORBIDDEN (the user is known, the role is too low)."""
        raise PermissionDeniedError(f"this action requires the {self.role} role or above")


class IsOperator(IsAuthenticated):
    """OPERATOR or ADMIN."""

    role = Role.OPERATOR


class IsAdmin(IsAuthenticated):
    """ADMIN only."""

    role = Role.ADMIN


def requires(permission: BasePermission) -> list[FieldExtension]:
    """Field extensions enforcing `permission`: `@strawberry.field(extensions=requires(...))`."""
    # no schema directive: the SDL stays exactly the contract's; docs/graphql.md lists roles
    return [PermissionExtension(permissions=[permission], use_directives=False)]
