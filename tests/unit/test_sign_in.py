"""The sign-in throttle's counts, locks and back-off (app/web/sign_in.py), in memory."""

from limits.aio.storage import MemoryStorage

from app.web.sign_in import BASE_BACKOFF, FAILURES, IP_FAILURES, MAX_BACKOFF, SignInThrottle


async def test_five_failures_lock_the_account_for_strangers_only() -> None:
    throttle = SignInThrottle(MemoryStorage())
    await throttle.succeeded("ada@example.com", "10.0.0.1")  # the owner's usual address
    for _ in range(FAILURES - 1):
        await throttle.failed("ada@example.com", "203.0.113.5")
    assert await throttle.retry_after("ada@example.com", "198.51.100.1") == 0
    await throttle.failed("ada@example.com", "203.0.113.5")
    assert 0 < await throttle.retry_after("ada@example.com", "198.51.100.1") <= BASE_BACKOFF
    assert await throttle.retry_after("ada@example.com", "10.0.0.1") == 0
    assert await throttle.retry_after("bob@example.com", "198.51.100.1") == 0


async def test_each_further_lock_doubles_up_to_the_cap() -> None:
    storage = MemoryStorage()
    throttle = SignInThrottle(storage)
    seen = []
    for _ in range(FAILURES - 1 + 6):
        await throttle.failed("ada@example.com", "203.0.113.5")
        seen.append(round(await throttle.retry_after("ada@example.com", "203.0.113.5")))
    locks = seen[FAILURES - 1 :]
    assert locks == [60, 120, 240, 480, MAX_BACKOFF, MAX_BACKOFF]


async def test_one_address_spraying_many_accounts_is_locked() -> None:
    throttle = SignInThrottle(MemoryStorage())
    for number in range(IP_FAILURES):
        await throttle.failed(f"user{number}@example.com", "203.0.113.9")
    assert await throttle.retry_after("someone-new@example.com", "203.0.113.9") > 0
    assert await throttle.retry_after("someone-new@example.com", "203.0.113.10") == 0


async def test_success_clears_the_address_count_but_not_the_account_lock() -> None:
    throttle = SignInThrottle(MemoryStorage())
    for _ in range(FAILURES - 1):
        await throttle.failed("ada@example.com", "10.0.0.1")
    await throttle.succeeded("ada@example.com", "10.0.0.1")
    await throttle.failed("ada@example.com", "10.0.0.1")
    # four earlier failures are forgiven for this address; the account has counted five
    assert await throttle.retry_after("ada@example.com", "10.0.0.1") == 0
    assert await throttle.retry_after("ada@example.com", "192.0.2.77") > 0
