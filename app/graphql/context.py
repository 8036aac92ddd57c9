"""Per-request GraphQL context: settings, the signed-in user (loaded once), DB sessions, loaders."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import strawberry
from anyio import to_thread
from sqlmodel import Session
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from app.core import db
from app.core.auth import credentials_fingerprint, read_token
from app.core.config import Settings
from app.core.errors import AuthenticationError
from app.core.models import User
from app.services import users

T = TypeVar("T")
K = TypeVar("K")

AUTHORIZATION = "authorization"
_MISSING = "authentication required: send the header 'Authorization: Bearer <token>'"
_MALFORMED = "the Authorization value must be 'Bearer <token>'"
_GONE = "invalid or expired token: the account is disabled or no longer exists"
_CHANGED = "invalid or expired token: the account's password or role changed; sign in again"


async def in_session(work: Callable[[Session], T]) -> T:
    """Run `work` in a worker thread with its own session, committed when it returns."""

    # services are synchronous (sqlmodel, bcrypt): running them on the event loop would
    # stall every other request and WebSocket for the duration of a query or a hash
    def call() -> T:
        with db.session_scope() as session:
            return work(session)

    return await to_thread.run_sync(call)


def bearer_token(authorization: str | None) -> str:
    """The token in an `Authorization: Bearer <token>` value; AuthenticationError otherwise."""
    if authorization is None or not authorization.strip():
        raise AuthenticationError(_MISSING)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(_MALFORMED)
    return token.strip()


def authorization_from_params(params: Mapping[str, object] | None) -> str | None:
    """The `Authorization` entry of a WebSocket `connection_init` payload, any key case."""
    for key, value in (params or {}).items():
        if isinstance(key, str) and key.lower() == AUTHORIZATION:
            return value if isinstance(value, str) else None
    return None


async def authenticate(authorization: str | None, *, settings: Settings) -> User:
    """The active user an `Authorization` value names, reloaded from the database."""
    claims = read_token(bearer_token(authorization), secrets=settings.jwt_keys)
    user = await in_session(lambda session: users.get_user(session=session, user_id=claims.user_id))
    # a token outlives a disabled or deleted account: the database has the last word
    if user is None or not user.is_active:
        raise AuthenticationError(_GONE)
    if credentials_fingerprint(user) != claims.fingerprint:
        raise AuthenticationError(_CHANGED)
    return user


async def authenticate_connection(
    params: Mapping[str, object] | None, *, settings: Settings
) -> User:
    """The user of a WebSocket `connection_init` payload `{"Authorization": "Bearer ..."}`."""
    return await authenticate(authorization_from_params(params), settings=settings)


class GraphQLContext(BaseContext):
    """What every resolver sees as `info.context`; one instance per request or WebSocket."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self._user: User | None = None
        self._auth_error: AuthenticationError | None = None
        self._checked = False
        # several root fields of one request resolve concurrently; load the user once
        self._lock = asyncio.Lock()
        self._loaders: dict[Callable[..., Any], DataLoader[Any, Any]] = {}

    def loader(self, load: Callable[[list[K]], Awaitable[Sequence[T]]]) -> DataLoader[K, T]:
        """This context's DataLoader for the batch function `load`, made on first use."""
        found = self._loaders.get(load)
        if found is None:
            # batching only, no cache: a WebSocket context lives long and values change
            found = self._loaders[load] = DataLoader(load_fn=load, cache=False)
        return found

    async def _authenticate(self) -> User:
        # after a WebSocket `connection_init`, its payload carries the credentials
        if self.connection_params is not None:
            return await authenticate_connection(self.connection_params, settings=self.settings)
        header = self.request.headers.get(AUTHORIZATION) if self.request is not None else None
        return await authenticate(header, settings=self.settings)

    async def current_user(self) -> User | None:
        """The signed-in user, or None when the request is anonymous or its token is bad."""
        async with self._lock:
            if not self._checked:
                try:
                    self._user = await self._authenticate()
                except AuthenticationError as exc:
                    self._auth_error = exc
                self._checked = True
        return self._user

    async def reauthenticate(self) -> User:
        """The user reloaded now (a long-lived WebSocket re-checks); AuthenticationError if gone."""
        user = await self._authenticate()
        async with self._lock:
            self._user, self._auth_error, self._checked = user, None, True
        return user

    async def require_user(self) -> User:
        """The signed-in user; AuthenticationError saying why when there is none."""
        user = await self.current_user()
        if user is None:
            # a fresh exception per field: one instance raised twice would pile up tracebacks
            raise AuthenticationError(str(self._auth_error) if self._auth_error else _MISSING)
        return user


# what resolvers annotate `info` with, so `info.context` is typed
Info = strawberry.Info[GraphQLContext, None]
