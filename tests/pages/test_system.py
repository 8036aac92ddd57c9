"""The System page: ADMINs see the partitions, who evaluates each and their lag; nobody
else gets in. Here the app runs alone (no Redis): its own evaluator owns every partition."""

from nicegui.testing import User

from app.workers import leases
from tests.pages.conftest import Account
from tests.waiting import wait_for

PARTITIONS = 16


def _evaluating() -> bool:
    owner = leases.this_process()
    return owner is not None and owner.fresh()


async def test_admin_sees_this_process_evaluating_every_partition(
    user: User, admin: Account
) -> None:
    del admin
    await wait_for(_evaluating)  # the app's evaluator took the lock
    await user.open("/system")
    await user.should_see("One process: without Redis, this process evaluates every partition.")
    await user.should_see(f"{PARTITIONS} / {PARTITIONS}")
    await user.should_see("this page's process")
    assert len(user.find(marker="system-process").elements) == 1
    for partition in range(PARTITIONS):
        await user.should_see(marker=f"system-partition-{partition}")
    await user.should_not_see("no owner")
    await user.should_see(marker="nav-system")


async def test_partitions_without_an_evaluator_are_shown_as_such(
    user: User, admin: Account
) -> None:
    del admin
    await wait_for(_evaluating)
    owner = leases.this_process()
    assert owner is not None
    await owner.close()  # as if the evaluator had stopped: no owner registered
    await user.open("/system")
    await user.should_see(f"0 / {PARTITIONS}")
    await user.should_see("No process evaluates rules")
    await user.should_see("no owner")


async def test_only_admins_see_the_system(user: User, operator: Account) -> None:
    del operator
    await user.should_not_see(marker="nav-system")
    await user.open("/system")
    await user.should_see("Not allowed")
    await user.should_not_see(marker="system")
