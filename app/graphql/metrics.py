"""GraphQL metrics: operations by type and result, and the subscriptions streaming now.

A schema extension, so queries and mutations over HTTP and everything sent over a
WebSocket are measured in one place. An operation is counted when it ends; for a
subscription that is when its stream ends, and its result is "error" if any error was
sent on it. A document whose operation cannot be read (it does not parse) counts as a
query: that is what a GraphQL document without a keyword is.
"""

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.core import metrics


class OperationMetrics(SchemaExtension):
    """Counts each operation (graphql_operations_total) and live subscriptions."""

    def __init__(self) -> None:
        self._streaming = False

    def on_operation(self) -> Iterator[None]:
        """Count the operation once it ends, with its type and whether anything failed."""
        crashed = False
        try:
            yield
        except Exception:  # not a cancel: a client ending its subscription is no error
            crashed = True
            raise
        finally:
            if self._streaming:
                metrics.GRAPHQL_SUBSCRIPTIONS_ACTIVE.dec()
            context = self.execution_context
            errors = context.pre_execution_errors or getattr(context.result, "errors", None)
            result = "error" if crashed or errors else "ok"
            metrics.GRAPHQL_OPERATIONS.labels(self._type(), result).inc()

    def on_execute(self) -> Iterator[None]:
        """A subscription whose stream starts is active until its operation ends."""
        yield
        if self._type() == OperationType.SUBSCRIPTION.value:
            self._streaming = True
            metrics.GRAPHQL_SUBSCRIPTIONS_ACTIVE.inc()

    def _type(self) -> str:
        try:
            return self.execution_context.operation_type.value
        except RuntimeError:  # no document, or no operation of the name asked for
            return OperationType.QUERY.value
