"""Dashboards over GraphQL (SPEC 12): list, read, create, update, delete, import/export."""

import strawberry
from sqlmodel import Session
from strawberry.scalars import JSON

from app.core import models
from app.core.errors import NotFoundError
from app.graphql import arguments
from app.graphql.context import Info, in_session
from app.graphql.loaders import users_by_id
from app.graphql.permissions import IsAuthenticated, IsOperator, requires
from app.graphql.types import DeleteResult, User, given, iso_utc
from app.services import dashboards
from app.services.dashboards import DashboardChange

DEFAULT_LIMIT = 100

DashboardVisibility = strawberry.enum(
    models.DashboardVisibility,
    description="PRIVATE: its owner and ADMINs see it; SHARED: every signed-in user.",
)


@strawberry.type(description="A dashboard: a grid of widgets, its spec (docs/dashboards.md).")
class Dashboard:
    """A dashboard as GraphQL shows it; `spec` is its whole export."""

    id: strawberry.ID
    name: str
    description: str | None
    visibility: DashboardVisibility
    spec: JSON = strawberry.field(
        description="The whole spec (an export): `importDashboard` takes it back as it is."
    )
    created_at: str
    updated_at: str
    provisioned: bool = strawberry.field(
        description="From a file in IOTDECK_DASHBOARDS_DIR: read-only here (save a copy)."
    )
    owner_id: strawberry.Private[object]

    @strawberry.field(description="Who made it; null for a provisioned dashboard.")
    async def owner(self, info: Info) -> User | None:
        """The owner, loaded with the other owners of the request."""
        if self.owner_id is None:
            return None
        found = await info.context.loader(users_by_id).load(self.owner_id)
        return User.from_model(found) if found is not None else None

    @classmethod
    def from_model(cls, dashboard: models.Dashboard) -> "Dashboard":
        """The GraphQL view of a stored dashboard."""
        return cls(
            id=strawberry.ID(str(dashboard.id)),
            name=dashboard.name,
            description=dashboard.description,
            visibility=models.DashboardVisibility(dashboard.visibility),
            spec=dashboards.export_spec(dashboard),
            created_at=iso_utc(dashboard.created_at),
            updated_at=iso_utc(dashboard.updated_at),
            provisioned=dashboard.provisioned,
            owner_id=dashboard.owner_id,
        )


@strawberry.input(description="A new dashboard; without a spec it starts empty.")
class CreateDashboardInput:
    """Arguments of `createDashboard`."""

    name: str
    description: str | None = strawberry.UNSET
    visibility: DashboardVisibility | None = strawberry.UNSET
    spec: JSON | None = strawberry.UNSET


@strawberry.input(description="A change to a dashboard: what is left out stays.")
class UpdateDashboardInput:
    """Arguments of `updateDashboard`."""

    id: strawberry.ID
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    visibility: DashboardVisibility | None = strawberry.UNSET
    spec: JSON | None = strawberry.UNSET


def _change(data: CreateDashboardInput | UpdateDashboardInput) -> DashboardChange:
    description = data.description if given(data.description) else None
    return DashboardChange(
        name=data.name if given(data.name) else None,
        # an explicit null or empty description clears it; left out, it stays
        description="" if given(data.description) and description is None else description,
        visibility=data.visibility if given(data.visibility) else None,
        spec=data.spec if given(data.spec) else None,
    )


@strawberry.type
class DashboardsQuery:
    """Dashboards a signed-in user may open."""

    @strawberry.field(
        description="The dashboards you may open, by name; one page (`limit` 1 to the "
        "server's page size).",
        extensions=requires(IsAuthenticated()),
    )
    async def dashboards(
        self, info: Info, limit: int | None = DEFAULT_LIMIT, offset: int | None = 0
    ) -> list[Dashboard]:
        """One page of the visible dashboards."""
        user = await info.context.require_user()
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(limit, offset, default=DEFAULT_LIMIT, max_limit=max_limit)
        found = await in_session(
            lambda session: dashboards.list_dashboards(
                session=session, user=user, limit=count, offset=skip, max_limit=max_limit
            )
        )
        return [Dashboard.from_model(dashboard) for dashboard in found]

    @strawberry.field(
        description="A dashboard you may open; null when there is none (or not for you).",
        extensions=requires(IsAuthenticated()),
    )
    async def dashboard(self, info: Info, id: strawberry.ID) -> Dashboard | None:
        """The dashboard, or null."""
        user = await info.context.require_user()

        def load(session: Session) -> models.Dashboard | None:
            try:
                return dashboards.get_dashboard(session=session, user=user, dashboard_id=id)
            except NotFoundError:
                return None

        found = await in_session(load)
        return Dashboard.from_model(found) if found is not None else None


@strawberry.type
class DashboardsMutation:
    """Making and changing dashboards: OPERATOR and above; owners and ADMINs edit."""

    @strawberry.mutation(
        description="Create a dashboard (OPERATOR).", extensions=requires(IsOperator())
    )
    async def create_dashboard(self, info: Info, input: CreateDashboardInput) -> Dashboard:
        """The new dashboard, owned by you."""
        user = await info.context.require_user()
        data = _change(input)
        created = await in_session(
            lambda session: dashboards.create_dashboard(session=session, user=user, data=data)
        )
        return Dashboard.from_model(created)

    @strawberry.mutation(
        description="Change a dashboard (its owner or an ADMIN; not a provisioned one).",
        extensions=requires(IsOperator()),
    )
    async def update_dashboard(self, info: Info, input: UpdateDashboardInput) -> Dashboard:
        """The dashboard after the change; a refused change changes nothing."""
        user = await info.context.require_user()
        data = _change(input)
        changed = await in_session(
            lambda session: dashboards.update_dashboard(
                session=session, user=user, dashboard_id=input.id, data=data
            )
        )
        return Dashboard.from_model(changed)

    @strawberry.mutation(
        description="Delete a dashboard (its owner or an ADMIN; not a provisioned one).",
        extensions=requires(IsOperator()),
    )
    async def delete_dashboard(self, info: Info, id: strawberry.ID) -> DeleteResult:
        """Which dashboard was deleted."""
        user = await info.context.require_user()
        await in_session(
            lambda session: dashboards.delete_dashboard(session=session, user=user, dashboard_id=id)
        )
        return DeleteResult(success=True, id=id)

    @strawberry.mutation(
        description="A new dashboard from a whole spec (an export), owned by you (OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def import_dashboard(
        self,
        info: Info,
        spec: JSON,
        visibility: DashboardVisibility | None = strawberry.UNSET,
    ) -> Dashboard:
        """The imported dashboard; a bad spec is BAD_USER_INPUT naming its JSON path."""
        user = await info.context.require_user()
        chosen = visibility if given(visibility) else None
        created = await in_session(
            lambda session: dashboards.import_dashboard(
                session=session, user=user, spec=spec, visibility=chosen
            )
        )
        return Dashboard.from_model(created)
