"""Sign-in with throttling (SPEC 8.2), shared by GraphQL `login` and the login page.

After FAILURES failed attempts for one account within WINDOW seconds, further attempts
for it are refused with RATE_LIMITED, whatever the password, until a back-off passes:
BASE_BACKOFF seconds, doubling with each further lock, capped at MAX_BACKOFF.

An attacker could otherwise keep the admin locked out from everywhere by failing five
times every quarter of an hour. So the account-wide lock does not apply to an address
that signed in to that account successfully within TRUST_SECONDS: such an address has
its own count (the same five failures, the same back-off), and the admin's usual
workstation or VPN address keeps working while the account is under attack from
elsewhere. One address failing against many accounts (password spraying) is locked on
its own after IP_FAILURES failures in the window.

The counters live where the request rate limits do (`app.web.limiter.make_storage`): in
Redis when configured, so every process sees the same counts, else in this process.
"""

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from functools import cache
from typing import Any

from anyio import to_thread
from limits.aio.storage import MemoryStorage, Storage

from app.core import db, metrics
from app.core.errors import AuthenticationError, RateLimitedError
from app.core.models import User
from app.services import users
from app.web.limiter import StorageTrouble, make_storage, whole_seconds

logger = logging.getLogger(__name__)

FAILURES = 5  # per account (and per trusted address) within WINDOW
IP_FAILURES = 50  # per address, over every account, within WINDOW
WINDOW = 15 * 60
BASE_BACKOFF = 60
MAX_BACKOFF = 15 * 60
LEVEL_MEMORY = 60 * 60  # how long a lock raises the next one's back-off
TRUST_SECONDS = 30 * 24 * 60 * 60

REFUSED = "too many failed sign-in attempts: try again in {seconds} s"


@dataclass(frozen=True)
class _Counter:
    """One thing whose failures are counted: an account, an address, or both together."""

    key: str
    threshold: int


class _FallbackStorage:
    """The shared storage, or this process's memory while the shared one fails.

    Throttling must neither stop every sign-in nor stop throttling when Redis is away:
    for that while, each process counts on its own.
    """

    def __init__(self, shared: Storage) -> None:
        self.shared = shared
        self.local = MemoryStorage()
        self._trouble = StorageTrouble("counting sign-in failures in this process")

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await getattr(self.shared, name)(*args)
        except Exception as exc:  # any storage failure: count here instead
            self._trouble.report(exc)
            return await getattr(self.local, name)(*args)

    async def get(self, key: str) -> int:
        """The counter's value (0 when absent)."""
        return await self._call("get", key)

    async def get_expiry(self, key: str) -> float:
        """When the counter expires, as a UNIX time."""
        return await self._call("get_expiry", key)

    async def incr(self, key: str, expiry: int) -> int:
        """Add one; a new counter expires after `expiry` seconds."""
        return await self._call("incr", key, expiry)

    async def clear(self, key: str) -> None:
        """Forget the counter."""
        await self._call("clear", key)


class SignInThrottle:
    """Failure counts and locks; every method takes a normalised email and an address."""

    def __init__(self, storage: Storage) -> None:
        self.storage = _FallbackStorage(storage)

    @staticmethod
    def _counters(email: str, client: str) -> tuple[_Counter, _Counter, _Counter]:
        return (
            _Counter(f"signin:account:{email}", FAILURES),
            _Counter(f"signin:client:{email}:{client}", FAILURES),
            _Counter(f"signin:ip:{client}", IP_FAILURES),
        )

    async def _trusted(self, email: str, client: str) -> bool:
        return await self.storage.get(f"signin:trusted:{email}:{client}") > 0

    async def _locked_for(self, counter: _Counter) -> float:
        """Seconds left on the counter's lock, 0 when there is none."""
        if await self.storage.get(f"{counter.key}:lock") <= 0:
            return 0.0
        return max(0.0, await self.storage.get_expiry(f"{counter.key}:lock") - time.time())

    async def retry_after(self, email: str, client: str) -> float:
        """Seconds before `client` may try `email` again; 0 when it may now."""
        account, pair, address = self._counters(email, client)
        checked = [pair, address]
        if not await self._trusted(email, client):
            checked.append(account)
        return max([await self._locked_for(counter) for counter in checked])

    async def failed(self, email: str, client: str) -> None:
        """Count a failed attempt, locking whatever reached its threshold."""
        for counter in self._counters(email, client):
            if await self.storage.incr(f"{counter.key}:failures", WINDOW) >= counter.threshold:
                level = await self.storage.incr(f"{counter.key}:level", LEVEL_MEMORY)
                backoff = min(BASE_BACKOFF * 2 ** (level - 1), MAX_BACKOFF)
                await self.storage.clear(f"{counter.key}:lock")
                await self.storage.incr(f"{counter.key}:lock", backoff)
                logger.warning(
                    "sign-in locked for %d s after repeated failures (%s)",
                    backoff,
                    counter.key.split(":")[1],
                )

    async def succeeded(self, email: str, client: str) -> None:
        """Forget this address's failures for the account and trust it from now on."""
        _, pair, _ = self._counters(email, client)
        for suffix in ("failures", "level", "lock"):
            await self.storage.clear(f"{pair.key}:{suffix}")
        trusted = f"signin:trusted:{email}:{client}"
        await self.storage.clear(trusted)
        await self.storage.incr(trusted, TRUST_SECONDS)


@cache
def throttle_for(redis_url: str) -> SignInThrottle:
    """The process's throttle for a storage: pages and GraphQL must share the counts."""
    return SignInThrottle(make_storage(redis_url))


# locks of the accounts being tried now; an entry goes when no attempt holds it
_account_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _authenticate(email: str, password: str) -> User:
    with db.session_scope() as session:
        return users.authenticate(session=session, email=email, password=password)


async def sign_in(email: str, password: str, *, client: str, redis_url: str) -> User:
    """The active user with these credentials, unless the attempt is throttled.

    RateLimitedError (with `retry_after`) while throttled, checked before the password so
    a correct one does not get through; AuthenticationError for wrong credentials.
    """
    key = email.strip().lower() if isinstance(email, str) else ""
    throttle = throttle_for(redis_url)
    # one attempt per account at a time in this process: fired in parallel, attempts would
    # all pass the check before the first failure is counted
    lock = _account_locks.setdefault(key, asyncio.Lock())
    async with lock:
        seconds = await throttle.retry_after(key, client)
        if seconds > 0:
            metrics.RATE_LIMIT_REFUSALS.labels("signin").inc()
            message = REFUSED.format(seconds=whole_seconds(seconds))
            raise RateLimitedError(message, retry_after=seconds)
        try:
            user = await to_thread.run_sync(_authenticate, email, password)
        except AuthenticationError:
            await throttle.failed(key, client)
            raise
        await throttle.succeeded(key, client)
        return user
