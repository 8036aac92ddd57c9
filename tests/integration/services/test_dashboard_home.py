"""Home dashboards, the built-in Fleet overview and "Save as copy", on every storage backend."""

from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.core import db
from app.core.errors import NotFoundError, PermissionDeniedError
from app.core.models import DashboardVisibility, Role, User, UserCreate
from app.services import dashboards, users
from app.services.dashboards import DashboardChange

pytestmark = pytest.mark.all_backends


def _user(email: str, role: Role) -> User:
    with db.session_scope() as session:
        data = UserCreate(email=email, name=email, role=role, password="a long password 1")
        return users.create_user(session=session, data=data)


def _home(user: User) -> tuple[str, str | None]:
    with db.session_scope() as session:
        found = dashboards.home_dashboard(session=session, user=session.get(User, user.id))
        return found.name, found.provisioned_from


def test_everyone_starts_on_the_fleet_overview_and_may_choose_another(engine: Engine) -> None:
    del engine
    viewer = _user("home-viewer@example.com", Role.VIEWER)
    operator = _user("home-operator@example.com", Role.OPERATOR)
    assert _home(viewer) == ("Fleet overview", dashboards.FLEET_OVERVIEW)
    with db.session_scope() as session:
        shared = dashboards.create_dashboard(
            session=session,
            user=operator,
            data=DashboardChange(name="Night shift", visibility=DashboardVisibility.SHARED),
        )
        private = dashboards.create_dashboard(
            session=session, user=operator, data=DashboardChange(name="Mine")
        )
        shared_id, private_id = shared.id, private.id
    with db.session_scope() as session:
        dashboards.set_home(session=session, user=viewer, dashboard_id=shared_id)
    assert _home(viewer) == ("Night shift", None)
    with db.session_scope() as session, pytest.raises(NotFoundError):
        dashboards.set_home(session=session, user=viewer, dashboard_id=private_id)
    # the chosen dashboard goes private: the viewer is back on the overview, not refused
    with db.session_scope() as session:
        change = DashboardChange(visibility=DashboardVisibility.PRIVATE)
        dashboards.update_dashboard(
            session=session, user=operator, dashboard_id=shared_id, data=change
        )
    assert _home(viewer) == ("Fleet overview", dashboards.FLEET_OVERVIEW)
    with db.session_scope() as session:
        dashboards.set_home(session=session, user=viewer, dashboard_id=None)
        assert session.get(User, viewer.id).home_dashboard_id is None


def test_the_fleet_overview_is_built_in_read_only_and_never_duplicated(
    engine: Engine, tmp_path: Path
) -> None:
    del engine
    admin = _user("home-admin@example.com", Role.ADMIN)
    with db.session_scope() as session:
        first = dashboards.ensure_fleet_overview(session=session)
        again = dashboards.ensure_fleet_overview(session=session)
        assert first.id == again.id
        assert first.visibility == DashboardVisibility.SHARED and first.owner_id is None
        assert not dashboards.can_edit(admin, first)
        overview_id = first.id
    with db.session_scope() as session, pytest.raises(PermissionDeniedError):
        dashboards.delete_dashboard(session=session, user=admin, dashboard_id=overview_id)
    # provisioning a folder never removes it, though no file holds it
    with db.session_scope() as session:
        report = dashboards.provision(session=session, folder=tmp_path)
        assert report.removed == []
        assert dashboards.find_dashboard(session=session, dashboard_id=overview_id)


def test_save_as_copy_makes_a_private_editable_copy_of_a_read_only_dashboard(
    engine: Engine,
) -> None:
    del engine
    operator = _user("copy-operator@example.com", Role.OPERATOR)
    viewer = _user("copy-viewer@example.com", Role.VIEWER)
    with db.session_scope() as session:
        overview = dashboards.ensure_fleet_overview(session=session)
        copied = dashboards.copy_dashboard(session=session, user=operator, dashboard_id=overview.id)
        assert copied.name == "Fleet overview (copy)"
        assert copied.owner_id == operator.id and not copied.provisioned
        assert copied.visibility == DashboardVisibility.PRIVATE
        assert copied.spec["widgets"] == overview.spec["widgets"]
        assert dashboards.can_edit(operator, copied)
        with pytest.raises(PermissionDeniedError):
            dashboards.copy_dashboard(session=session, user=viewer, dashboard_id=overview.id)
