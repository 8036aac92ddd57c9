"""Correlation ids of GraphQL subscriptions (SPEC 11).

An operation over HTTP runs under its request's id (`app.web.request_ids`). A subscription
gets an id of its own, logged with its operation name when it starts and when it ends, so
the lines of one subscription stand apart from those of the others on the same WebSocket
(which all carry the socket's request id). strawberry runs each WebSocket operation in a
task of its own: the id is bound for that task and goes with it.
"""

import logging
from collections.abc import Iterator

from graphql import FieldNode, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from app.core import logs

logger = logging.getLogger(__name__)


def operation_name(context: ExecutionContext) -> str:
    """The operation's name, or else its first root field's (`alertTriggered`)."""
    if context.operation_name:
        return context.operation_name
    document = context.graphql_document
    for definition in document.definitions if document is not None else ():
        if isinstance(definition, OperationDefinitionNode):
            for selection in definition.selection_set.selections:
                if isinstance(selection, FieldNode):
                    return selection.name.value
    return "anonymous"


class SubscriptionIds(SchemaExtension):
    """Gives each subscription its own correlation id; logs when it starts and ends."""

    def __init__(self) -> None:
        self.name: str | None = None  # set when the operation is a subscription

    def on_operation(self) -> Iterator[None]:
        """Log the end of a subscription, however it ends (complete, close, error)."""
        try:
            yield
        finally:
            if self.name is not None:
                logger.info("subscription %s ended", self.name)

    def on_execute(self) -> Iterator[None]:
        """Before a subscription runs: bind its id (and name) to its task, and say so."""
        context = self.execution_context
        if context.operation_type is OperationType.SUBSCRIPTION:
            self.name = operation_name(context)
            logs.bind_for_task(correlation_id=logs.new_id(), operation=self.name)
            logger.info("subscription %s started", self.name)
        yield
