"""The one place turning exceptions into GraphQL errors with `extensions.code` (and `field`).

Every error a client sees carries `extensions.code`:
- UNAUTHENTICATED, FORBIDDEN, NOT_FOUND: from the domain errors in `app.core.errors`;
- BAD_USER_INPUT, with `extensions.field` (camelCase): a service `ValidationError`, or an
  argument value graphql-core refused before any resolver ran (wrong enum value or scalar
  type, missing required argument, bad variable value);
- RATE_LIMITED, with `extensions.retryAfter` (whole seconds) when known: too many requests
  or sign-in attempts, a second rule test while one runs, a subscription over the limits
  (`app.core.errors.RateLimitedError`);
- UNAVAILABLE: the database cannot be reached now; answered at once while its circuit
  breaker is open instead of waiting for a connection (`app.core.db.DatabaseUnavailableError`);
- GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED: the document itself is wrong (syntax,
  token limit, unknown field or argument, depth, alias or cost limit, introspection where
  it is off: see `app.graphql.limits`);
- INTERNAL_SERVER_ERROR: anything else, logged with its traceback and masked.
"""

import logging
import re
from collections.abc import Iterable, Iterator

from graphql import (
    ArgumentNode,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSyntaxError,
    ListValueNode,
    Node,
    ObjectValueNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    print_ast,
    visit,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import ExecutionResult, StreamExecutionResult

from app.core.errors import DomainError, RateLimitedError, ValidationError
from app.web.limiter import whole_seconds

logger = logging.getLogger(__name__)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
INTERNAL_MESSAGE = "internal server error"
MAX_REASON = 500  # characters of a refusal's reason

# graphql-core names a missing argument only in its message (3.3 and 3.2 wordings)
_MISSING_ARGUMENT = re.compile(
    r"(?:Argument '[^'(]*\((\w+):\)'|argument '(\w+)') of type '[^']+' is required"
)
# ...and a missing input-object field as "... required field 'name' ..." or "'Input.name'"
_MISSING_INPUT_FIELD = re.compile(r"(?:required field '|Field '\w+\.)(\w+)'")
# a refused variable value says where: "Variable '$i' has invalid value at .items[0].name:"
_VARIABLE_PATH = re.compile(r"^Variable '\$\w+' [^:;]*? at '?([$\w.\[\]]+)'?[:;]")
_PATH_NAME = re.compile(r"\.(\w+)")
_CAMEL = re.compile(r"_([a-z0-9])")


def camel_case(name: str) -> str:
    """`is_active` -> `isActive`: service field names as the GraphQL schema spells them."""
    return _CAMEL.sub(lambda match: match.group(1).upper(), name)


def _rebuild(
    error: GraphQLError, message: str, extensions: dict[str, object], *, keep_original: bool
) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error if keep_original else None,
        extensions=extensions,
    )


def bad_input(error: GraphQLError, field: str, reason: str) -> GraphQLError:
    """A BAD_USER_INPUT error naming `field` (camelCase) in its message and extensions."""
    field = camel_case(field)
    if len(reason) > MAX_REASON:  # reasons may quote the value: a megabyte is not sent back
        reason = f"{reason[:MAX_REASON]}..."
    extensions = {"code": BAD_USER_INPUT, "field": field}
    return _rebuild(error, f"{field}: {reason}", extensions, keep_original=True)


def _coded(error: GraphQLError, code: str) -> GraphQLError:
    return _rebuild(error, error.message, {"code": code}, keep_original=True)


def _has_code(error: GraphQLError) -> bool:
    return bool(error.extensions and "code" in error.extensions)


def _domain_error(error: GraphQLError) -> DomainError | None:
    original = error.original_error
    if isinstance(original, DomainError) and original.code != DomainError.code:
        return original
    return None


def is_unexpected(error: GraphQLError) -> bool:
    """True for errors the client must not see: a bug or an outage, not a bad request."""
    if isinstance(error, GraphQLSyntaxError) or _has_code(error) or _domain_error(error):
        return False
    original = error.original_error
    # in a resolver, anything but a domain error is ours; before resolvers, graphql-core
    # reports bad documents and variables as GraphQLErrors, anything else is a crash
    if error.path is not None:
        return True
    return original is not None and not isinstance(original, GraphQLError)


def log_unexpected(errors: Iterable[GraphQLError]) -> None:
    """Log, with traceback, the errors `translate` will mask."""
    for error in errors:
        if is_unexpected(error):
            original = error.original_error
            logger.error(
                "unexpected GraphQL error at %s: %s",
                ".".join(map(str, error.path or [])) or "<operation>",
                error.message,
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )


def _from_domain(error: GraphQLError, domain: DomainError) -> GraphQLError:
    """The error a service raised on purpose, with its code (and field for bad input)."""
    if isinstance(domain, ValidationError):
        return bad_input(error, domain.field, domain.reason)
    extensions: dict[str, object] = {"code": domain.code}
    if isinstance(domain, RateLimitedError) and domain.retry_after is not None:
        extensions["retryAfter"] = whole_seconds(domain.retry_after)
    return _rebuild(error, str(domain), extensions, keep_original=True)


class _ArgumentValues(Visitor):
    """Which argument or input field each value node and each variable of a document sets."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        self.variables: dict[str, str] = {}
        self.composites: list[tuple[ValueNode, str]] = []

    def enter_argument(self, node: ArgumentNode, *_args: object) -> None:
        """Record the argument's value tree."""
        self._record(node.value, node.name.value)

    def _record(self, value: ValueNode, name: str) -> None:
        self.names[id(value)] = name
        if isinstance(value, VariableNode):
            self.variables.setdefault(value.name.value, name)
        elif isinstance(value, ObjectValueNode):
            self.composites.append((value, name))
            for field in value.fields:
                self.names[id(field)] = field.name.value
                self._record(field.value, field.name.value)
        elif isinstance(value, ListValueNode):
            self.composites.append((value, name))
            for item in value.values:
                self._record(item, name)

    def name_of(self, node: Node) -> str | None:
        """The argument or input field `node` sets, if it is one of the document's values.

        graphql-core checks an object or list given where a scalar or enum goes on a copy
        of it (without location): that copy is recognised by its printed form.
        """
        name = self.names.get(id(node))
        if name is not None or not isinstance(node, (ObjectValueNode, ListValueNode)):
            return name
        printed = print_ast(node)
        return next((name for value, name in self.composites if print_ast(value) == printed), None)


def argument_values(document: DocumentNode | None) -> _ArgumentValues:
    """The argument and input-field names of every value and variable in `document`."""
    collector = _ArgumentValues()
    if document is not None:
        visit(document, collector)
    return collector


def _validation_error(error: GraphQLError, values: _ArgumentValues) -> GraphQLError:
    """BAD_USER_INPUT when a validation error is about an argument's value, else VALIDATION."""
    node = error.nodes[0] if error.nodes else None
    field: str | None = None
    if isinstance(node, (FieldNode, DirectiveNode)):
        if missing := _MISSING_ARGUMENT.search(error.message):
            field = missing.group(1) or missing.group(2)
    elif node is not None and (field := values.name_of(node)) is not None:
        if isinstance(node, ObjectValueNode) and (
            missing := _MISSING_INPUT_FIELD.search(error.message)
        ):
            field = missing.group(1)
    if field is None:
        return _coded(error, VALIDATION_FAILED)
    return bad_input(error, field, error.message)


def _variable_error(error: GraphQLError, values: _ArgumentValues) -> GraphQLError | None:
    """BAD_USER_INPUT for a variable value refused after validation, before any resolver."""
    node = error.nodes[0] if error.nodes else None
    if not isinstance(node, VariableDefinitionNode):
        return None
    variable = node.variable.name.value
    field = values.variables.get(variable, variable)
    if (where := _VARIABLE_PATH.match(error.message)) and (
        names := _PATH_NAME.findall(where.group(1))
    ):
        field = names[-1]
    elif missing := _MISSING_INPUT_FIELD.search(error.message):
        field = missing.group(1)
    return bad_input(error, field, error.message)


def translate(error: GraphQLError, values: _ArgumentValues | None = None) -> GraphQLError:
    """The error as the client sees it; `values` names the arguments of the operation."""
    if _has_code(error):
        return error  # tagged in the validate phase, or seen already (streamed results)
    if domain := _domain_error(error):
        return _from_domain(error, domain)
    if is_unexpected(error):
        masked = {"code": INTERNAL_SERVER_ERROR}
        return _rebuild(error, INTERNAL_MESSAGE, masked, keep_original=False)
    if isinstance(error, GraphQLSyntaxError):
        return _coded(error, PARSE_FAILED)
    if variable := _variable_error(error, values or _ArgumentValues()):
        return variable
    return _coded(error, VALIDATION_FAILED)


class GraphQLErrorCodes(SchemaExtension):
    """Gives every error of an operation its `extensions.code`; one instance per operation."""

    def __init__(self) -> None:
        self._values: _ArgumentValues | None = None

    def _argument_values(self) -> _ArgumentValues:
        # built only when an error needs it: successful operations pay nothing
        if self._values is None:
            self._values = argument_values(self.execution_context.graphql_document)
        return self._values

    def on_validate(self) -> Iterator[None]:
        """Code every validation error: BAD_USER_INPUT for argument values, else VALIDATION."""
        yield
        # strawberry already holds this very list in the result it is about to return
        errors = self.execution_context.pre_execution_errors or []
        for index, error in enumerate(errors):
            if not _has_code(error):
                errors[index] = _validation_error(error, self._argument_values())

    def _process(self, result: object) -> None:
        if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
            result.errors = [translate(error, self._argument_values()) for error in result.errors]

    def on_operation(self) -> Iterator[None]:
        """Translate the errors of a query or mutation over HTTP."""
        yield
        result = self.execution_context.result
        self._process(getattr(result, "initial_result", result))

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """Translate the errors of each result sent over a WebSocket."""
        self._process(result)
        yield
