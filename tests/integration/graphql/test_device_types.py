"""Per device type settings over GraphQL: the rate limit override, its roles and checks."""

from datetime import UTC, datetime

from app.core import db
from app.core.models import DeviceCreate, Role
from app.services import device_types, devices
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

FIELDS = "type rateLimit rateBurst effectiveRateLimit effectiveRateBurst"
GET = f"query($type: String!) {{ deviceTypeSettings(type: $type) {{ {FIELDS} }} }}"
UPDATE = (
    "mutation($type: String!, $rateLimit: String, $rateBurst: Int) {"
    " updateDeviceTypeSettings(type: $type, rateLimit: $rateLimit, rateBurst: $rateBurst)"
    f" {{ {FIELDS} }} }}"
)
UPDATE_BURST_ONLY = (
    "mutation($type: String!, $rateBurst: Int) {"
    f" updateDeviceTypeSettings(type: $type, rateBurst: $rateBurst) {{ {FIELDS} }} }}"
)
DEFAULTS = {
    "type": "camera",
    "rateLimit": None,
    "rateBurst": None,
    "effectiveRateLimit": "10/second",
    "effectiveRateBurst": 600,
}


async def test_override_round_trip(api: GraphQLClient, admin: str, viewer: str) -> None:
    assert (await api.data(GET, {"type": "camera"}, token=viewer))["deviceTypeSettings"] == (
        DEFAULTS
    )
    changed = {"type": "camera", "rateLimit": "100/minute", "rateBurst": 50}
    updated = (await api.data(UPDATE, changed, token=admin))["updateDeviceTypeSettings"]
    assert updated == {
        **changed,
        "effectiveRateLimit": "100/minute",
        "effectiveRateBurst": 50,
    }
    assert (await api.data(GET, {"type": "camera"}, token=viewer))["deviceTypeSettings"] == (
        updated
    )
    # a left-out argument stays; null goes back to the default
    burst_only = {"type": "camera", "rateBurst": None}
    cleared = (await api.data(UPDATE_BURST_ONLY, burst_only, token=admin))[
        "updateDeviceTypeSettings"
    ]
    assert cleared == {**updated, "rateBurst": None, "effectiveRateBurst": 600}
    with db.session_scope() as session:
        overrides = device_types.rate_overrides(session=session)
    assert overrides == {"camera": ("100/minute", None)}
    reset = {"type": "camera", "rateLimit": None, "rateBurst": None}
    assert (await api.data(UPDATE, reset, token=admin))["updateDeviceTypeSettings"] == DEFAULTS


async def test_bad_values_name_the_field_and_change_nothing(api: GraphQLClient, admin: str) -> None:
    await api.data(UPDATE, {"type": "camera", "rateLimit": "5/second", "rateBurst": 9}, token=admin)
    cases = [
        ({"rateLimit": "ten a second"}, "rateLimit"),
        ({"rateLimit": "0/second"}, "rateLimit"),
        ({"rateLimit": "10/fortnight"}, "rateLimit"),
        ({"rateBurst": 0}, "rateBurst"),
        ({"rateLimit": "1/second", "rateBurst": -5}, "rateBurst"),
    ]
    for arguments, field in cases:
        error = await api.error(UPDATE, {"type": "camera", **arguments}, token=admin)
        assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", field)
        if field == "rateLimit":
            assert "is not a rate such as '10/second'" in error["message"]
    stored = await api.data(GET, {"type": "camera"}, token=admin)
    assert stored["deviceTypeSettings"]["rateLimit"] == "5/second"
    assert stored["deviceTypeSettings"]["rateBurst"] == 9


async def test_only_admin_may_change_and_anyone_signed_in_may_read(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    change = {"type": "camera", "rateLimit": "1/second"}
    assert code_of(await api.error(UPDATE, change)) == "UNAUTHENTICATED"
    assert code_of(await api.error(GET, {"type": "camera"})) == "UNAUTHENTICATED"
    for role in (Role.VIEWER, Role.OPERATOR):
        refused = await api.error(UPDATE, change, token=accounts[role].token)
        assert code_of(refused) == "FORBIDDEN"
        read = await api.data(GET, {"type": "camera"}, token=accounts[role].token)
        assert read["deviceTypeSettings"] == DEFAULTS
    await api.data(UPDATE, change, token=accounts[Role.ADMIN].token)


async def test_device_shows_when_it_was_last_rate_limited(api: GraphQLClient, viewer: str) -> None:
    refused_at = datetime(2026, 12, 1, 8, 30, 15, 250000, tzinfo=UTC)
    with db.session_scope() as session:
        quiet = devices.create_device(session=session, data=DeviceCreate(name="q", type="t"))
        noisy = devices.create_device(session=session, data=DeviceCreate(name="n", type="t"))
        device_types.record_rate_limited(session=session, device_ids=[noisy.id], at=refused_at)
        ids = {"quiet": str(quiet.id), "noisy": str(noisy.id)}
    query = "query($id: ID!) { device(id: $id) { rateLimitedAt } }"
    noisy_seen = await api.data(query, {"id": ids["noisy"]}, token=viewer)
    quiet_seen = await api.data(query, {"id": ids["quiet"]}, token=viewer)
    assert noisy_seen["device"]["rateLimitedAt"] == "2026-12-01T08:30:15.250Z"
    assert quiet_seen["device"]["rateLimitedAt"] is None
