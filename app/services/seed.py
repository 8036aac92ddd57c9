"""Demo data from `seeds/demo.json`: users, devices and rules, created only when missing.

Its `command_types` section is no data to create: it lists the commands each device type
understands (what the simulator executes and the command panel offers).
"""

import copy
import functools
import json
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session

import seeds
from app.core.models import DashboardVisibility, Device, DeviceCreate, Role, UserCreate
from app.services import dashboards, devices, rules, users
from app.services.rules import RuleInput

DEMO_FILE = Path(seeds.__file__).parent / "demo.json"
DASHBOARDS = Path(seeds.__file__).parent / "dashboards"  # the first is docs/dashboards.md's example
DEMO_ADMIN = "admin@example.com"
ADMIN_EMAIL = "admin@example.com"


@dataclass(frozen=True)
class GeneratedLogin:
    """A demo account created with a generated password, to be shown once."""

    role: Role
    email: str
    password: str


@dataclass
class SeedReport:
    """What a seed run created; `generated` lists the accounts whose password it made up."""

    users_created: list[str] = field(default_factory=list)
    devices_created: list[str] = field(default_factory=list)
    rules_created: list[str] = field(default_factory=list)
    dashboards_created: list[str] = field(default_factory=list)
    generated: list[GeneratedLogin] = field(default_factory=list)


def seed_demo(
    *,
    session: Session,
    admin_password: str = "",
    operator_password: str = "",
    viewer_password: str = "",
) -> SeedReport:
    """Create the demo users and devices that do not exist yet (safe to run again).

    Each account gets its configured password, or one of its own generated here: a shared
    password would let whoever knows the viewer's sign in as admin.
    """
    data = json.loads(DEMO_FILE.read_text())
    configured = {
        Role.ADMIN: admin_password,
        Role.OPERATOR: operator_password,
        Role.VIEWER: viewer_password,
    }
    report = SeedReport()
    for entry in data["users"]:
        if users.get_user_by_email(session=session, email=entry["email"]) is not None:
            continue  # existing accounts keep whatever password they have now
        role = Role(entry["role"])
        password = configured[role]
        if not password:
            password = secrets.token_urlsafe(12)
            report.generated.append(GeneratedLogin(role, entry["email"], password))
        create = UserCreate(email=entry["email"], name=entry["name"], role=role, password=password)
        users.create_user(session=session, data=create)
        report.users_created.append(entry["email"])
    for entry in data["devices"]:
        device_id = uuid.UUID(entry["id"])
        if session.get(Device, device_id) is not None:
            continue
        # stable ids let rules and docs refer to demo devices
        create = DeviceCreate(
            id=device_id, name=entry["name"], type=entry["type"], metadata=entry["metadata"]
        )
        devices.create_device(session=session, data=create)
        report.devices_created.append(entry["name"])
    existing = {rule.name for rule in rules.list_rules(session=session)}
    for text in data["rules"]:
        rule, _ = rules.build_rule(RuleInput(expression=text))
        if rule.name not in existing:
            rules.create_rule(session=session, data=RuleInput(expression=text))
            report.rules_created.append(rule.name)
    _seed_dashboards(session, report)
    return report


def _seed_dashboards(session: Session, report: SeedReport) -> None:
    """The demo's example dashboards, SHARED and owned by the demo admin, when missing."""
    admin = users.get_user_by_email(session=session, email=DEMO_ADMIN)
    if admin is None:
        return
    existing = {d.name for d in dashboards.list_dashboards(session=session, user=admin)}
    for path in sorted(DASHBOARDS.glob("*.json")):
        spec = json.loads(path.read_text())
        if spec["name"] in existing:
            continue
        dashboards.import_dashboard(
            session=session, user=admin, spec=spec, visibility=DashboardVisibility.SHARED
        )
        report.dashboards_created.append(spec["name"])


@functools.cache
def _command_types() -> dict[str, list[dict]]:
    return json.loads(DEMO_FILE.read_text()).get("command_types", {})


def command_types() -> dict[str, list[dict]]:
    """Per device type, its commands: `{"action", "label", "description", "params"}` each.

    `params` is an example a user may start from; a copy, so callers may change it.
    """
    return copy.deepcopy(_command_types())
