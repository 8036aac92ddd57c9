"""The /graphql endpoint: HTTP queries, GraphiQL, and WebSocket subscriptions."""

import json

from fastapi import APIRouter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from app.core.config import Settings
from app.core.errors import AuthenticationError
from app.graphql.context import GraphQLContext
from app.graphql.errors import UNAUTHENTICATED
from app.graphql.schema import create_schema

PATH = "/graphql"
# strawberry's own cap counts every operation in flight on a socket (queries too) and
# answers without an `extensions.code`: kept above ours, which counts subscriptions only
IN_FLIGHT_QUERIES = 20


class IotdeckGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    """strawberry's router, refusing WebSockets whose `connection_init` carries no valid token."""

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType:
        """Authenticate the `connection_init` payload `{"Authorization": "Bearer <JWT>"}`."""
        try:
            await context.require_user()
        except AuthenticationError as exc:
            # strawberry closes the socket with 4403 Forbidden (graphql-transport-ws)
            raise ConnectionRejectionError({"message": str(exc), "code": UNAUTHENTICATED}) from exc
        return UNSET

    def decode_json(self, data: str | bytes) -> object:
        """A body or message; JSON nested past Python's parser is unparsable, not a crash."""
        try:
            return super().decode_json(data)
        except RecursionError:  # strawberry answers 400 (HTTP) or closes with 4400 (socket)
            raise json.JSONDecodeError("nested too deeply", "", 0) from None


def create_router(settings: Settings) -> APIRouter:
    """The /graphql router for these settings."""

    async def get_context() -> GraphQLContext:
        # strawberry fills in request/response; the user is loaded on first need
        return GraphQLContext(settings)

    per_connection = settings.graphql_max_subscriptions_per_connection
    return IotdeckGraphQLRouter(
        create_schema(settings),
        path=PATH,
        # off: a browser's GET /graphql is 404, like any unknown page
        graphql_ide="graphiql" if settings.introspection else None,
        context_getter=get_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        allowed_origins=settings.cors_origins,
        max_subscriptions_per_connection=per_connection + IN_FLIGHT_QUERIES,
    )
