"""The root schema, composed from the per-domain Query and Mutation pieces."""

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext

from app.core.config import Settings
from app.graphql.alerts import AlertsMutation, AlertsQuery
from app.graphql.commands import CommandsMutation, CommandsQuery, CommandsSubscription
from app.graphql.correlation import SubscriptionIds
from app.graphql.credentials import CredentialsMutation
from app.graphql.dashboards import DashboardsMutation, DashboardsQuery
from app.graphql.device_types import DeviceTypesMutation, DeviceTypesQuery
from app.graphql.devices import DevicesMutation, DevicesQuery
from app.graphql.errors import GraphQLErrorCodes, log_unexpected
from app.graphql.limits import query_limits, websocket_operation_limit
from app.graphql.metrics import OperationMetrics
from app.graphql.subscriptions import Subscription as DeviceSubscription
from app.graphql.telemetry import TelemetryQuery
from app.graphql.users import UsersMutation, UsersQuery


@strawberry.type
class Query(
    UsersQuery,
    DevicesQuery,
    TelemetryQuery,
    AlertsQuery,
    CommandsQuery,
    DeviceTypesQuery,
    DashboardsQuery,
):
    """Every query."""


@strawberry.type
class Mutation(
    UsersMutation,
    DevicesMutation,
    AlertsMutation,
    CommandsMutation,
    CredentialsMutation,
    DeviceTypesMutation,
    DashboardsMutation,
):
    """Every mutation."""


@strawberry.type
class Subscription(DeviceSubscription, CommandsSubscription):
    """Every subscription."""


class Schema(strawberry.Schema):
    """strawberry's Schema, logging only the errors that are bugs or outages."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log unexpected errors with their traceback; bad requests are not worth an ERROR."""
        del execution_context
        log_unexpected(errors)


def create_schema(settings: Settings) -> Schema:
    """The schema for these settings (depth, alias and cost limits, introspection)."""
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            OperationMetrics,  # first, so outermost: it sees every error of the operation
            # factories, not instances: strawberry builds fresh extensions per operation
            websocket_operation_limit(settings),
            query_limits(settings),
            GraphQLErrorCodes,
            SubscriptionIds,
        ],
    )
