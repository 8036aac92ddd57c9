"""Dashboards over GraphQL (SPEC 12): CRUD, who sees and edits, import with bad specs,
export/import round trip, provisioned dashboards read-only."""

import json
from pathlib import Path
from typing import Any

from app.core import db
from app.core.models import Role
from app.services import dashboards
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

EXAMPLE = Path(__file__).parents[3] / "seeds" / "dashboards" / "cold-store.dashboard.json"
FIELDS = "id name description visibility spec provisioned createdAt updatedAt owner { id email }"
CREATE = f"mutation($i: CreateDashboardInput!) {{ createDashboard(input: $i) {{ {FIELDS} }} }}"
UPDATE = f"mutation($i: UpdateDashboardInput!) {{ updateDashboard(input: $i) {{ {FIELDS} }} }}"
DELETE = "mutation($id: ID!) { deleteDashboard(id: $id) { success id } }"
IMPORT = (
    "mutation($s: JSON!, $v: DashboardVisibility) "
    f"{{ importDashboard(spec: $s, visibility: $v) {{ {FIELDS} }} }}"
)
GET = f"query($id: ID!) {{ dashboard(id: $id) {{ {FIELDS} }} }}"
LIST = "{ dashboards { id name visibility } }"


def _example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


async def _create(api: GraphQLClient, token: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Freezers", **fields}
    return (await api.data(CREATE, {"i": body}, token=token))["createDashboard"]


async def test_create_read_update_delete(api: GraphQLClient, accounts: dict[Role, Account]) -> None:
    operator = accounts[Role.OPERATOR]
    created = await _create(api, operator.token, description="Site A")
    assert created["visibility"] == "PRIVATE"
    assert created["owner"] == {"id": str(operator.user.id), "email": operator.user.email}
    assert created["provisioned"] is False
    # a new dashboard starts empty; its spec's name and description are the dashboard's
    assert created["spec"]["widgets"] == []
    assert created["spec"]["name"] == "Freezers"
    assert created["spec"]["description"] == "Site A"
    found = (await api.data(GET, {"id": created["id"]}, token=operator.token))["dashboard"]
    assert found == created
    spec = _example()
    change = {"id": created["id"], "name": "Freezers (all sites)", "spec": spec}
    updated = (await api.data(UPDATE, {"i": change}, token=operator.token))["updateDashboard"]
    assert updated["name"] == "Freezers (all sites)"
    assert updated["spec"]["name"] == "Freezers (all sites)"
    assert [widget["id"] for widget in updated["spec"]["widgets"]] == [
        widget["id"] for widget in spec["widgets"]
    ]
    deleted = await api.data(DELETE, {"id": created["id"]}, token=operator.token)
    assert deleted["deleteDashboard"] == {"success": True, "id": created["id"]}
    assert (await api.data(GET, {"id": created["id"]}, token=operator.token)) == {"dashboard": None}


async def test_private_is_the_owners_shared_is_everyones_admins_edit_any(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    operator, viewer, admin = (accounts[role] for role in (Role.OPERATOR, Role.VIEWER, Role.ADMIN))
    private = await _create(api, operator.token, name="Mine")
    shared = await _create(api, operator.token, name="Ours", visibility="SHARED")
    seen_by_viewer = (await api.data(LIST, token=viewer.token))["dashboards"]
    assert [row["name"] for row in seen_by_viewer] == ["Ours"]
    assert (await api.data(GET, {"id": private["id"]}, token=viewer.token)) == {"dashboard": None}
    # a VIEWER looks only
    refused = await api.error(UPDATE, {"i": {"id": shared["id"], "name": "x"}}, token=viewer.token)
    assert code_of(refused) == "FORBIDDEN"
    refused = await api.error(CREATE, {"i": {"name": "x"}}, token=viewer.token)
    assert code_of(refused) == "FORBIDDEN"
    # an ADMIN sees and edits every dashboard
    names = [row["name"] for row in (await api.data(LIST, token=admin.token))["dashboards"]]
    assert names == ["Mine", "Ours"]
    renamed = {"i": {"id": private["id"], "name": "Renamed by admin"}}
    assert (await api.data(UPDATE, renamed, token=admin.token))["updateDashboard"]["name"] == (
        "Renamed by admin"
    )


async def test_a_bad_spec_names_its_json_path_and_changes_nothing(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    operator = accounts[Role.OPERATOR].token
    created = await _create(api, operator)
    spec = _example()
    spec["widgets"][0]["w"] = 40  # off the 12-column grid
    error = await api.error(UPDATE, {"i": {"id": created["id"], "spec": spec}}, token=operator)
    assert code_of(error) == "BAD_USER_INPUT"
    assert error["extensions"]["field"].startswith("widgets[0]")
    unknown = {**_example(), "colour": "red"}
    error = await api.error(IMPORT, {"s": unknown}, token=operator)
    assert code_of(error) == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "colour"
    error = await api.error(IMPORT, {"s": {**_example(), "version": 2}}, token=operator)
    assert error["extensions"]["field"] == "version"
    names = [row["name"] for row in (await api.data(LIST, token=operator))["dashboards"]]
    assert names == ["Freezers"]
    still = (await api.data(GET, {"id": created["id"]}, token=operator))["dashboard"]
    assert still == created


async def test_export_then_import_round_trips_exactly(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    operator = accounts[Role.OPERATOR].token
    first = (await api.data(IMPORT, {"s": _example(), "v": "SHARED"}, token=operator))[
        "importDashboard"
    ]
    assert first["visibility"] == "SHARED"
    again = (await api.data(IMPORT, {"s": first["spec"]}, token=operator))["importDashboard"]
    assert again["spec"] == first["spec"]
    assert again["name"] == first["name"] == _example()["name"]
    assert again["id"] != first["id"]


async def test_provisioned_dashboards_are_read_only_but_can_be_copied(
    api: GraphQLClient, accounts: dict[Role, Account], tmp_path: Path
) -> None:
    admin = accounts[Role.ADMIN].token
    (tmp_path / "cold-store.json").write_text(EXAMPLE.read_text())
    with db.session_scope() as session:
        report = dashboards.provision(session=session, folder=tmp_path)
    assert report.loaded == ["cold-store.json"]
    (row,) = (await api.data(LIST, token=accounts[Role.VIEWER].token))["dashboards"]
    found = (await api.data(GET, {"id": row["id"]}, token=admin))["dashboard"]
    assert found["provisioned"] is True
    assert found["owner"] is None
    refused = await api.error(UPDATE, {"i": {"id": row["id"], "name": "x"}}, token=admin)
    assert code_of(refused) == "FORBIDDEN"
    assert "provisioned" in refused["message"]
    copy = (await api.data(IMPORT, {"s": found["spec"]}, token=admin))["importDashboard"]
    assert copy["provisioned"] is False
    assert copy["spec"] == found["spec"]
