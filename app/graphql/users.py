"""Users over GraphQL: `me`, `users`, `login`, `createUser`, `updateUser`."""

import strawberry

from app.core.auth import create_token
from app.core.errors import ValidationError
from app.core.models import UserCreate, UserUpdate
from app.graphql import arguments
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAdmin, IsAuthenticated, requires
from app.graphql.types import AuthPayload, Role, UpdateUserInput, User, given
from app.services import users
from app.web.limiter import client_of
from app.web.sign_in import sign_in

DEFAULT_LIMIT = 100


def _user_update(data: UpdateUserInput) -> UserUpdate:
    """The service update for an input: absent stays, null clears the name, else refused."""
    for field in ("role", "is_active", "password"):
        if given(getattr(data, field)) and getattr(data, field) is None:
            raise ValidationError(field, "must not be null (leave it out to keep it)")
    name = data.name if given(data.name) else None
    return UserUpdate(
        # the service reads an empty name as "no name"; None would mean "unchanged"
        name="" if given(data.name) and name is None else name,
        role=data.role if given(data.role) else None,
        is_active=data.is_active if given(data.is_active) else None,
        password=data.password if given(data.password) else None,
    )


@strawberry.type
class UsersQuery:
    """Read access to users, for every signed-in role."""

    @strawberry.field(description="The signed-in user.", extensions=requires(IsAuthenticated()))
    async def me(self, info: Info) -> User:
        """The user the bearer token names."""
        return User.from_model(await info.context.require_user())

    @strawberry.field(
        description="Users by email, one page; `limit` is 1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def users(
        self, info: Info, limit: int | None = DEFAULT_LIMIT, offset: int | None = 0
    ) -> list[User]:
        """One page of the users."""
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(limit, offset, default=DEFAULT_LIMIT, max_limit=max_limit)
        found = await in_session(
            lambda session: users.list_users(
                session=session, limit=count, offset=skip, max_limit=max_limit
            )
        )
        return [User.from_model(user) for user in found]


@strawberry.type
class UsersMutation:
    """Signing in (open to all) and managing users (ADMIN)."""

    @strawberry.mutation(description="Exchange an email and password for a bearer token.")
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        """A token for valid credentials; one error for unknown email and wrong password.

        Throttled per account and per address (app/web/sign_in.py): RATE_LIMITED with
        `retryAfter` while a lock lasts, even for the right password.
        """
        email, password = arguments.credentials(email, password)  # BAD_USER_INPUT if absurd
        settings = info.context.settings
        client = client_of(info.context.request, settings)
        user = await sign_in(email, password, client=client, redis_url=settings.redis_url)
        token = create_token(
            user, secret=settings.jwt_secret, expire_hours=settings.jwt_expire_hours
        )
        return AuthPayload(token=token, user=User.from_model(user))

    @strawberry.mutation(description="Create a user (ADMIN).", extensions=requires(IsAdmin()))
    async def create_user(
        self, email: str, password: str, role: Role, name: str | None = strawberry.UNSET
    ) -> User:
        """A new user; the email must not be taken."""
        data = UserCreate(
            email=email, password=password, role=role, name=name if given(name) else None
        )
        user = await in_session(lambda session: users.create_user(session=session, data=data))
        return User.from_model(user)

    @strawberry.mutation(
        description="Change a user's name, role, active flag or password (ADMIN).",
        extensions=requires(IsAdmin()),
    )
    async def update_user(self, input: UpdateUserInput) -> User:
        """The user after the change; the last active admin cannot be demoted or disabled."""
        data = _user_update(input)
        user = await in_session(
            lambda session: users.update_user(session=session, user_id=input.id, data=data)
        )
        return User.from_model(user)
