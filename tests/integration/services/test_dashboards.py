"""Provisioning dashboards from files, and the CLI's export and import (SPEC 12)."""

import json
import subprocess
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from app.core import db
from app.core.models import Dashboard, DashboardVisibility, Role, UserCreate
from app.services import dashboards, users
from bench.services import iotdeck_environment
from tests.e2e.conftest import graphql_as, seeded_server, server_environment
from tests.serving import IOTDECK

EXAMPLE = Path(__file__).parents[3] / "seeds" / "dashboards" / "cold-store.dashboard.json"


def _stored() -> dict[str, Dashboard]:
    with db.session_scope() as session:
        return {row.provisioned_from or row.name: row for row in session.exec(select(Dashboard))}


def test_a_folder_with_a_good_and_a_broken_file(engine: Engine, tmp_path: Path) -> None:
    del engine
    good = json.loads(EXAMPLE.read_text())
    (tmp_path / "good.json").write_text(json.dumps(good))
    broken = {**good, "widgets": [{**good["widgets"][0], "x": -1}]}
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "broken.json").write_text(json.dumps(broken))
    (tmp_path / "notes.txt").write_text("not a dashboard")
    with db.session_scope() as session:
        report = dashboards.provision(session=session, folder=tmp_path)
    assert report.loaded == ["good.json"]
    ((path, reason),) = report.refused
    assert path == str(tmp_path / "site" / "broken.json")
    assert reason.startswith("widgets[0].x")
    stored = _stored()
    assert list(stored) == ["good.json"]
    assert stored["good.json"].visibility == DashboardVisibility.SHARED
    assert stored["good.json"].owner_id is None
    first_id = stored["good.json"].id
    # the file changes: the same dashboard follows it; the file goes: so does the dashboard
    (tmp_path / "good.json").write_text(json.dumps({**good, "name": "Cold store (v2)"}))
    with db.session_scope() as session:
        dashboards.provision(session=session, folder=tmp_path)
    again = _stored()["good.json"]
    assert (again.id, again.name, again.spec["name"]) == (
        first_id,
        "Cold store (v2)",
        "Cold store (v2)",
    )
    (tmp_path / "good.json").unlink()
    with db.session_scope() as session:
        report = dashboards.provision(session=session, folder=tmp_path)
    assert report.removed == ["good.json"]
    assert _stored() == {}


def _iotdeck(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IOTDECK, *args], env=env, capture_output=True, text=True, check=check)


def test_cli_import_then_export_round_trips(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    del engine
    with db.session_scope() as session:
        data = UserCreate(email="ops@example.com", password="x" * 12, role=Role.OPERATOR)
        users.create_user(session=session, data=data)
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_DATA_DIR=str(tmp_path),
        IOTDECK_TIMESCALEDB="off",
    )
    owner = ["--owner", "ops@example.com"]
    imported = _iotdeck(env, "dashboards", "import", str(EXAMPLE), *owner)
    exported = _iotdeck(env, "dashboards", "export", imported.stdout.split(" id ")[-1].strip())
    spec = json.loads(exported.stdout)
    assert spec["name"] == json.loads(EXAMPLE.read_text())["name"]
    (tmp_path / "exported.json").write_text(exported.stdout)
    second = _iotdeck(env, "dashboards", "import", str(tmp_path / "exported.json"), *owner)
    again = _iotdeck(env, "dashboards", "export", second.stdout.split(" id ")[-1].strip())
    assert again.stdout == exported.stdout
    refused = _iotdeck(
        env, "dashboards", "import", str(EXAMPLE), "--owner", "nobody@example.com", check=False
    )
    assert refused.returncode == 2
    assert "--owner: no user with email nobody@example.com" in refused.stderr


def test_serve_provisions_the_folder_at_start_and_skips_a_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "dashboards"
    folder.mkdir()
    good = json.loads(EXAMPLE.read_text())
    (folder / "cold-store.json").write_text(json.dumps(good))
    (folder / "broken.json").write_text(json.dumps({**good, "version": 7}))
    env = server_environment(tmp_path, IOTDECK_DASHBOARDS_DIR=str(folder))
    with seeded_server(tmp_path, ["--no-ingest"], env) as server:
        listed = graphql_as(
            server, server.viewer_email, "{ dashboards { name provisioned owner { id } } }"
        )
    provisioned = [d for d in listed["dashboards"] if d["provisioned"]]
    # the file's dashboard, beside the built-in overview; the broken file made none
    assert sorted(d["name"] for d in provisioned) == sorted([good["name"], "Fleet overview"])
    assert all(d["owner"] is None for d in provisioned)
    log = (tmp_path / "serve.log").read_text()
    assert f"dashboard file {folder / 'broken.json'} refused: version:" in log
