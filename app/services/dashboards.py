"""Dashboards (SPEC 12): who sees and changes which, specs checked, import, export, files.

Rules:
- OPERATORs and ADMINs make dashboards; a VIEWER only looks.
- A PRIVATE dashboard is seen by its owner and ADMINs, a SHARED one by everyone signed in.
- Its owner changes it, and so does any ADMIN.
- A provisioned dashboard (from IOTDECK_DASHBOARDS_DIR) is SHARED, has no owner and is
  changed only by editing its file; "save as copy" (`import_dashboard` of its export) works.
- The stored spec's `name` and `description` always follow the dashboard's own, so an
  export is the dashboard whole, and importing it gives the same dashboard back.
"""

import copy
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import or_
from sqlmodel import Session, col, select

from app.core.auth import has_role
from app.core.errors import NotFoundError, PermissionDeniedError, ValidationError
from app.core.models import Dashboard, DashboardVisibility, Role, User, utcnow
from app.dashboards.spec import parse_spec, spec_to_json
from app.services import validation
from app.services.validation import parse_id

logger = logging.getLogger(__name__)

NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 2000
SPEC_FILE_SUFFIX = ".json"
PROVISIONED_READ_ONLY = "a provisioned dashboard is changed in its file; save a copy to edit it"
# the built-in dashboards' `provisioned_from`: read-only like a file's, but no file removes them
BUILT_IN = "builtin:"
FLEET_OVERVIEW = BUILT_IN + "fleet-overview"
FLEET_OVERVIEW_SPEC: dict[str, Any] = {
    "version": 1,
    "name": "Fleet overview",
    "description": "The whole fleet at a glance: who is online, how much flows, what is wrong.",
    "widgets": [
        {
            "id": "devices",
            "type": "fleet",
            "title": "Devices",
            "x": 0,
            "y": 0,
            "w": 4,
            "h": 2,
            "options": {"show": "devices"},
        },
        {
            "id": "throughput",
            "type": "fleet",
            "title": "Telemetry",
            "x": 4,
            "y": 0,
            "w": 4,
            "h": 2,
            "options": {"show": "throughput"},
        },
        {
            "id": "open-alerts",
            "type": "fleet",
            "title": "Open alerts",
            "x": 8,
            "y": 0,
            "w": 4,
            "h": 2,
            "options": {"show": "alerts"},
        },
        {
            "id": "latest-alerts",
            "type": "alerts",
            "title": "Latest alerts",
            "x": 0,
            "y": 2,
            "w": 7,
            "h": 5,
            "options": {"limit": 10},
        },
        {
            "id": "silent",
            "type": "device_table",
            "title": "Devices silent too long",
            "x": 7,
            "y": 2,
            "w": 5,
            "h": 5,
            "options": {"status": "OFFLINE", "pageSize": 10},
        },
    ],
}


@dataclass(frozen=True, kw_only=True)
class DashboardChange:
    """A create or an update: None leaves a field as it is (on update) or at its default."""

    name: str | None = None
    description: str | None = None
    visibility: DashboardVisibility | None = None
    spec: object | None = None


def _name(value: object) -> str:
    return validation.text(value, "name", max_length=NAME_MAX_LENGTH)


def _description(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return validation.text(value, "description", max_length=DESCRIPTION_MAX_LENGTH)


def _checked_spec(spec: object, name: str, description: str | None) -> dict[str, Any]:
    """The spec as stored: validated, normalised, its name and description the dashboard's."""
    data = dict(spec) if isinstance(spec, dict) else spec
    if isinstance(data, dict):
        data["name"] = name
        data.pop("description", None)
        if description is not None:
            data["description"] = description
    return spec_to_json(parse_spec(data))


def empty_spec(name: str, description: str | None = None) -> dict[str, Any]:
    """The spec of a new dashboard with no widgets yet."""
    return _checked_spec({"version": 1, "widgets": []}, name, description)


def can_see(user: User, dashboard: Dashboard) -> bool:
    """Whether `user` may open `dashboard`."""
    return (
        dashboard.visibility == DashboardVisibility.SHARED
        or dashboard.owner_id == user.id
        or has_role(user, Role.ADMIN)
    )


def can_edit(user: User, dashboard: Dashboard) -> bool:
    """Whether `user` may change or delete `dashboard` in the app."""
    if dashboard.provisioned or not has_role(user, Role.OPERATOR):
        return False
    return dashboard.owner_id == user.id or has_role(user, Role.ADMIN)


def list_dashboards(
    *,
    session: Session,
    user: User,
    limit: int | None = None,
    offset: int = 0,
    max_limit: int = 1000,
) -> list[Dashboard]:
    """The dashboards `user` may open, by name; a page of them with `limit`."""
    query = select(Dashboard).order_by(col(Dashboard.name), col(Dashboard.id))
    if not has_role(user, Role.ADMIN):
        query = query.where(
            or_(Dashboard.visibility == DashboardVisibility.SHARED, Dashboard.owner_id == user.id)
        )
    if limit is not None:
        limit, offset = validation.page(limit, offset, max_limit=max_limit)
        query = query.offset(offset).limit(limit)
    return list(session.exec(query))


def get_dashboard(*, session: Session, user: User, dashboard_id: uuid.UUID | str) -> Dashboard:
    """The dashboard, when `user` may open it; NotFoundError otherwise (its existence too)."""
    found = session.get(Dashboard, parse_id(dashboard_id))
    if found is None or not can_see(user, found):
        raise NotFoundError("dashboard", dashboard_id)
    return found


def _editable(session: Session, user: User, dashboard_id: uuid.UUID | str) -> Dashboard:
    dashboard = get_dashboard(session=session, user=user, dashboard_id=dashboard_id)
    if dashboard.provisioned:
        raise PermissionDeniedError(PROVISIONED_READ_ONLY)
    if not can_edit(user, dashboard):
        raise PermissionDeniedError("only its owner or an ADMIN may change this dashboard")
    return dashboard


def create_dashboard(*, session: Session, user: User, data: DashboardChange) -> Dashboard:
    """A new dashboard owned by `user` (OPERATOR or above), empty unless a spec is given."""
    if not has_role(user, Role.OPERATOR):
        raise PermissionDeniedError("requires role OPERATOR or above")
    name = _name(data.name)
    description = _description(data.description)
    visibility = validation.any_of(
        data.visibility or DashboardVisibility.PRIVATE, "visibility", DashboardVisibility
    )
    spec = (
        empty_spec(name, description)
        if data.spec is None
        else _checked_spec(data.spec, name, description)
    )
    dashboard = Dashboard(
        name=name, description=description, visibility=visibility, spec=spec, owner_id=user.id
    )
    session.add(dashboard)
    session.flush()
    return dashboard


def update_dashboard(
    *, session: Session, user: User, dashboard_id: uuid.UUID | str, data: DashboardChange
) -> Dashboard:
    """The dashboard after the change; everything is checked before anything is set."""
    dashboard = _editable(session, user, dashboard_id)
    name = _name(data.name) if data.name is not None else dashboard.name
    description = (
        _description(data.description) if data.description is not None else dashboard.description
    )
    visibility = (
        validation.any_of(data.visibility, "visibility", DashboardVisibility)
        if data.visibility is not None
        else dashboard.visibility
    )
    spec = _checked_spec(dashboard.spec if data.spec is None else data.spec, name, description)
    dashboard.name, dashboard.description, dashboard.visibility = name, description, visibility
    dashboard.spec = spec
    dashboard.updated_at = utcnow()
    session.add(dashboard)
    session.flush()
    return dashboard


def delete_dashboard(*, session: Session, user: User, dashboard_id: uuid.UUID | str) -> None:
    """Delete it; users who had it as their home go back to the fleet overview."""
    session.delete(_editable(session, user, dashboard_id))
    session.flush()


def import_dashboard(
    *,
    session: Session,
    user: User,
    spec: object,
    visibility: DashboardVisibility | None = None,
) -> Dashboard:
    """A new dashboard from a whole spec (an export): its name and description from it."""
    if not isinstance(spec, dict):
        raise ValidationError("spec", "must be a JSON object (a dashboard's export)")
    return create_dashboard(
        session=session,
        user=user,
        data=DashboardChange(
            name=spec.get("name"),
            description=spec.get("description"),
            visibility=visibility,
            spec=spec,
        ),
    )


def find_dashboard(*, session: Session, dashboard_id: uuid.UUID | str) -> Dashboard:
    """The dashboard whoever may see it (the CLI's view: it holds the database)."""
    found = session.get(Dashboard, parse_id(dashboard_id))
    if found is None:
        raise NotFoundError("dashboard", dashboard_id)
    return found


def copy_dashboard(*, session: Session, user: User, dashboard_id: uuid.UUID | str) -> Dashboard:
    """ "Save as copy": a PRIVATE dashboard of `user` with the spec of one they may open."""
    original = get_dashboard(session=session, user=user, dashboard_id=dashboard_id)
    spec = export_spec(original) | {"name": f"{original.name} (copy)"[:NAME_MAX_LENGTH]}
    return import_dashboard(session=session, user=user, spec=spec)


@functools.cache
def _fleet_overview_spec() -> dict[str, Any]:
    """The built-in overview's spec, checked once per process."""
    name, description = FLEET_OVERVIEW_SPEC["name"], FLEET_OVERVIEW_SPEC["description"]
    return _checked_spec(FLEET_OVERVIEW_SPEC, name, description)


def ensure_fleet_overview(*, session: Session) -> Dashboard:
    """The built-in "Fleet overview" (SHARED, read-only), created or brought up to date."""
    found = session.exec(
        select(Dashboard).where(Dashboard.provisioned_from == FLEET_OVERVIEW)
    ).first()
    spec = _fleet_overview_spec()
    if found is not None and found.spec == spec:
        return found  # as every page open finds it: no write, no spec check
    spec = copy.deepcopy(spec)  # the stored dashboard's own, not the cached one
    dashboard = found or Dashboard(provisioned_from=FLEET_OVERVIEW, name=spec["name"], spec=spec)
    dashboard.name, dashboard.description, dashboard.spec = spec["name"], spec["description"], spec
    dashboard.visibility, dashboard.owner_id = DashboardVisibility.SHARED, None
    dashboard.updated_at = utcnow()
    session.add(dashboard)
    session.flush()
    return dashboard


def home_dashboard(*, session: Session, user: User) -> Dashboard:
    """The dashboard `/` shows `user`: their choice while they may open it, else the overview."""
    if user.home_dashboard_id is not None:
        chosen = session.get(Dashboard, user.home_dashboard_id)
        if chosen is not None and can_see(user, chosen):
            return chosen
    return ensure_fleet_overview(session=session)


def set_home(*, session: Session, user: User, dashboard_id: uuid.UUID | str | None) -> None:
    """Make a dashboard `user` may open their home; None goes back to the fleet overview."""
    stored = session.get(User, user.id)
    if stored is None:
        raise NotFoundError("user", user.id)
    if dashboard_id is None:
        stored.home_dashboard_id = None
    else:
        stored.home_dashboard_id = get_dashboard(
            session=session, user=user, dashboard_id=dashboard_id
        ).id
    session.add(stored)
    session.flush()


def export_spec(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard's whole spec: importing it gives the same dashboard back."""
    return dict(dashboard.spec)


@dataclass(frozen=True)
class ProvisionReport:
    """What provisioning did: files loaded, files refused (path and reason), removed."""

    loaded: list[str]
    refused: list[tuple[str, str]]
    removed: list[str]


def _spec_files(folder: Path) -> Iterable[Path]:
    return sorted(path for path in folder.rglob(f"*{SPEC_FILE_SUFFIX}") if path.is_file())


def _read_spec(path: Path) -> tuple[str, str | None, dict[str, Any]]:
    """A spec file's dashboard: its name, description and checked spec."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValidationError("spec", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("spec", "must be a JSON object")
    name, description = _name(data.get("name")), _description(data.get("description"))
    return name, description, _checked_spec(data, name, description)


def provision(*, session: Session, folder: Path) -> ProvisionReport:
    """Bring the provisioned dashboards in step with the spec files under `folder`.

    Each `*.json` file is one SHARED, read-only dashboard, found again by its path. A file
    that does not validate is reported (path and reason, e.g. `widgets[2].options.metric`)
    and skipped; its dashboard, if provisioned before, stays as it was. Dashboards whose
    file is gone are removed.
    """
    provisioned = {
        row.provisioned_from: row
        for row in session.exec(
            select(Dashboard).where(
                col(Dashboard.provisioned_from).is_not(None),
                col(Dashboard.provisioned_from).not_like(f"{BUILT_IN}%"),
            )
        )
    }
    loaded, refused, present = [], [], set()
    for path in _spec_files(folder):
        key = str(path.relative_to(folder))
        present.add(key)
        try:
            name, description, spec = _read_spec(path)
        except (ValidationError, OSError) as exc:
            refused.append((str(path), str(exc)))
            logger.error("dashboard file %s refused: %s", path, exc)
            continue
        dashboard = provisioned.get(key) or Dashboard(provisioned_from=key, name=name, spec=spec)
        dashboard.name, dashboard.description, dashboard.spec = name, description, spec
        dashboard.visibility, dashboard.owner_id = DashboardVisibility.SHARED, None
        dashboard.updated_at = utcnow()
        session.add(dashboard)
        loaded.append(key)
    removed = sorted(key for key in provisioned if key not in present)
    for key in removed:
        session.delete(provisioned[key])
    session.flush()
    return ProvisionReport(loaded=loaded, refused=refused, removed=removed)


def spec_json(dashboard: Dashboard) -> bytes:
    """The export as a file's bytes: indented, keys in the spec's order, a final newline."""
    return orjson.dumps(export_spec(dashboard), option=orjson.OPT_INDENT_2) + b"\n"
