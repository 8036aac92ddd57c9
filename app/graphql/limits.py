"""Bounds on a GraphQL document, checked before any resolver runs (SPEC 8.2).

Depth, aliases and an estimated cost are measured in one pass over each operation, every
fragment measured once however often it is spread. strawberry's own depth and alias
limiters walk a fragment again at each spread, so a few hundred tokens of fragments that
spread the next one twice would keep them busy on the event loop for hours.

The cost is a static estimate, made before execution: every field counts 1, and a list
field multiplies what it selects by the number of items it may return (`LIST_SIZES`
documents each figure). Fields repeated in a selection count each time; introspection
fields count 1 and are not followed (the schema bounds them). An operation over a limit is
refused as a whole with GRAPHQL_VALIDATION_FAILED, its message naming the figure and the
limit, which `extensions` repeat (`depth`/`maxDepth`, `aliases`/`maxAliases`,
`cost`/`maxCost`).
"""

import functools
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.validation import NoSchemaIntrospectionCustomRule
from graphql.validation.rules.max_introspection_depth_rule import MaxIntrospectionDepthRule
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension

from app.core import metrics
from app.core.config import Settings
from app.core.errors import DomainError
from app.core.intervals import parse_interval
from app.graphql import arguments
from app.graphql.errors import VALIDATION_FAILED
from app.services import rule_testing
from app.services.telemetry import MAX_BUCKETS
from app.web.limiter import client_of, rate_limited_error, request_limiter

# the parser stops here: bounds the work of parsing and of graphql-core's own validation
# (the introspection query is about 170 tokens; a rule text is one token however long)
MAX_TOKENS = 10_000
# items of a list that no argument bounds, when `LIST_SIZES` knows no better figure
DEFAULT_LIST_SIZE = 100
PAGE_ARGUMENTS = ("limit", "first")


def _buckets(args: Mapping[str, Any]) -> int:
    """`deviceTelemetryAggregated`: the buckets of its range."""
    try:
        span = arguments.moment(args["to"], "to") - arguments.moment(args["from"], "from")
        seconds = parse_interval(args["interval"])
    except (KeyError, TypeError, AttributeError, DomainError):
        return 1  # the resolver refuses the argument, naming it
    buckets = math.ceil(span.total_seconds() / seconds)
    # over MAX_BUCKETS the resolver refuses `interval` (BAD_USER_INPUT): its error is the
    # useful one, so such a field costs nothing here
    return 1 if buckets > MAX_BUCKETS else max(buckets, 1)


def _tested_devices(args: Mapping[str, Any]) -> int:
    """`testRule`: its `deviceIds`, else as many devices as one replay takes."""
    chosen = args.get("deviceIds")
    return len(chosen) if isinstance(chosen, list) else rule_testing.MAX_DEVICES


# lists whose length no `limit` argument gives: a bound where there is one, else the
# typical size (an estimate: the cost limit is about the shape of a query, not its data)
LIST_SIZES: dict[str, int | Callable[[Mapping[str, Any]], int]] = {
    "Query.deviceTelemetryAggregated": _buckets,
    "Query.testRule": _tested_devices,
    "Query.validateRule": 10,  # diagnostics of one text (at most 10,000 characters)
    "Device.credentials": 2,  # a bound: one live credential per kind
    "Alert.notifications": 10,  # one per notify target of the rule that fired
    # a bound: a replay stops at MAX_FIRINGS, spread over at most MAX_DEVICES results
    "RuleTestResult.firings": rule_testing.MAX_FIRINGS // rule_testing.MAX_DEVICES,
}
# a `limit` above these is refused by the resolver (BAD_USER_INPUT), so counts no more
MAX_LIMITS = {"Query.deviceTelemetry": arguments.MAX_POINTS}


@dataclass(frozen=True)
class Measure:
    """Depth, aliases and estimated cost of a selection."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0

    def beside(self, other: "Measure") -> "Measure":
        """Two selections of one selection set: the deeper depth, the sum of the rest."""
        return Measure(
            max(self.depth, other.depth), self.aliases + other.aliases, self.cost + other.cost
        )


_NOTHING = Measure()


def _fields(parent: GraphQLNamedType | None) -> Mapping[str, GraphQLField]:
    if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
        return parent.fields
    return {}


class _Walker:
    """Measures the operations of one document with one set of variables."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, max_page_size: int) -> None:
        self.schema = schema
        self.max_page_size = max_page_size
        self.fragments = {
            node.name.value: node
            for node in document.definitions
            if isinstance(node, FragmentDefinitionNode)
        }
        self.variables: VariableValues | None = None
        self._memo: dict[tuple[str, int | None], Measure] = {}
        self._open: set[str] = set()

    def operation(self, node: OperationDefinitionNode, raw: Mapping[str, Any]) -> Measure:
        """The measure of one operation, its variables coerced as execution will."""
        coerced = get_variable_values(self.schema, node.variable_definitions or (), dict(raw))
        # variables execution will refuse: the operation never runs, defaults are estimate
        # enough
        self.variables = coerced if isinstance(coerced, VariableValues) else None
        self._memo.clear()
        root = self.schema.get_root_type(node.operation)
        return self._selections(node.selection_set, root, None)

    def _selections(
        self, selections: SelectionSetNode, parent: GraphQLNamedType | None, inherited: int | None
    ) -> Measure:
        total = _NOTHING
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                found = self._field(selection, parent, inherited)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else parent
                found = self._selections(selection.selection_set, kind, inherited)
            elif isinstance(selection, FragmentSpreadNode):
                found = self._fragment(selection.name.value, inherited)
            else:  # pragma: no cover - graphql-core has no other selection
                continue
            total = total.beside(found)
        return total

    def _fragment(self, name: str, inherited: int | None) -> Measure:
        key = (name, inherited)
        if key in self._memo:
            return self._memo[key]
        fragment = self.fragments.get(name)
        if fragment is None or name in self._open:
            return _NOTHING  # unknown or cyclic: graphql-core reports it
        self._open.add(name)
        try:
            kind = self.schema.get_type(fragment.type_condition.name.value)
            found = self._selections(fragment.selection_set, kind, inherited)
        finally:
            self._open.discard(name)
        self._memo[key] = found
        return found

    def _field(
        self, node: FieldNode, parent: GraphQLNamedType | None, inherited: int | None
    ) -> Measure:
        alias = 1 if node.alias else 0
        name = node.name.value
        if name.startswith("__"):
            # bounded by the schema; aliases inside still count
            inner = self._selections(node.selection_set, None, None) if node.selection_set else None
            return Measure(0, alias + (inner.aliases if inner else 0), 1)
        definition = _fields(parent).get(name)
        coordinate = f"{parent.name}.{name}" if parent is not None else name
        size, page = self._size(coordinate, definition, node, inherited)
        if node.selection_set is None:
            return Measure(0, alias, 1 + (size or 0))
        child = get_named_type(definition.type) if definition is not None else None
        # an object field with a `limit` (deviceTelemetry) passes it to the list it holds
        inner = self._selections(node.selection_set, child, page if size is None else None)
        return Measure(1 + inner.depth, alias + inner.aliases, 1 + (size or 1) * inner.cost)

    def _size(
        self,
        coordinate: str,
        definition: GraphQLField | None,
        node: FieldNode,
        inherited: int | None,
    ) -> tuple[int | None, int | None]:
        """(items of a list field or None, the field's page size or None)."""
        if definition is None:
            return None, None
        args = self._arguments(definition, node)
        page = self._page(coordinate, definition, args)
        if not is_list_type(get_nullable_type(definition.type)):
            return None, page
        known = LIST_SIZES.get(coordinate)
        if known is not None:
            return (known(args) if callable(known) else known), page
        if page is not None:
            return page, page
        return (inherited or DEFAULT_LIST_SIZE), None

    def _page(
        self, coordinate: str, definition: GraphQLField, args: Mapping[str, Any]
    ) -> int | None:
        """The `limit` (or `first`) asked for, as the resolver will take it."""
        for name in PAGE_ARGUMENTS:
            if name in definition.args:
                value = args.get(name)
                # null: the resolver's default, as the schema states it
                value = definition.args[name].default_value if value is None else value
                wanted = value if isinstance(value, int) else DEFAULT_LIST_SIZE
                return min(max(wanted, 1), MAX_LIMITS.get(coordinate, self.max_page_size))
        return None

    def _arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any]:
        try:
            return get_argument_values(definition, node, self.variables)
        except (GraphQLError, TypeError, ValueError):  # execution refuses the value anyway
            return {
                name: argument.default_value
                for name, argument in definition.args.items()
                if isinstance(argument.default_value, (int, str, list))
            }


@dataclass(frozen=True)
class Limits:
    """The bounds an operation must stay within."""

    max_depth: int
    max_aliases: int
    max_cost: int
    max_page_size: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        """The limits `IOTDECK_GRAPHQL_MAX_*` and `IOTDECK_MAX_PAGE_SIZE` set."""
        return cls(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_cost=settings.graphql_max_cost,
            max_page_size=settings.max_page_size,
        )

    def refusals(self, name: str, measure: Measure) -> Iterator[tuple[str, dict[str, int]]]:
        """A message and its figures for each limit `measure` is over."""
        if measure.depth > self.max_depth:
            yield (
                f"'{name}' is {measure.depth} levels deep, more than the maximum operation "
                f"depth of {self.max_depth}",
                {"depth": measure.depth, "maxDepth": self.max_depth},
            )
        if measure.aliases > self.max_aliases:
            yield (
                f"'{name}' uses {measure.aliases} aliases, more than the limit of "
                f"{self.max_aliases}",
                {"aliases": measure.aliases, "maxAliases": self.max_aliases},
            )
        if measure.cost > self.max_cost:
            yield (
                f"'{name}' has an estimated cost of {measure.cost}, more than the limit of "
                f"{self.max_cost}: ask for smaller pages (`limit`) or fewer nested lists",
                {"cost": measure.cost, "maxCost": self.max_cost},
            )


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    *,
    max_page_size: int,
) -> dict[str, Measure]:
    """The measure of each operation of `document`, by name ("anonymous" for none)."""
    walker = _Walker(schema, document, max_page_size)
    return {
        node.name.value if node.name else "anonymous": walker.operation(node, variables or {})
        for node in document.definitions
        if isinstance(node, OperationDefinitionNode)
    }


def limits_rule(limits: Limits, variables: Mapping[str, Any] | None) -> type[ValidationRule]:
    """A graphql-core validation rule refusing the operations over `limits`."""

    class OperationLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            operations = {
                node.name.value if node.name else "anonymous": node
                for node in document.definitions
                if isinstance(node, OperationDefinitionNode)
            }
            found = measure(context.schema, document, variables, max_page_size=limits.max_page_size)
            for name, figures in found.items():
                for message, extensions in limits.refusals(name, figures):
                    context.report_error(
                        GraphQLError(
                            message,
                            operations[name],
                            extensions={"code": VALIDATION_FAILED, **extensions},
                        )
                    )

    return OperationLimits


class QueryLimits(SchemaExtension):
    """Adds the limits (and, unless allowed, the ban on introspection) to each operation."""

    def __init__(self, *, settings: Settings) -> None:
        self.limits = Limits.from_settings(settings)
        self.introspection = settings.introspection

    def on_operation(self) -> Iterator[None]:
        """Add this operation's rules: they need its variables to read `limit` arguments."""
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        raw = context.variables if isinstance(context.variables, Mapping) else None
        rules: list[type[ValidationRule]] = [limits_rule(self.limits, raw)]
        # `__typename` stays open either way: clients rely on it
        rules.append(MaxIntrospectionDepthRule if self.introspection else _NoIntrospection)
        context.validation_rules = (*context.validation_rules, *rules)
        yield


class _NoIntrospection(NoSchemaIntrospectionCustomRule):
    """graphql-core's rule refusing `__schema` and `__type`, with a message saying why."""

    def enter_field(self, node: FieldNode, *_args: object) -> None:
        """Refuse `__schema` and `__type`."""
        if node.name.value in ("__schema", "__type"):
            self.report_error(
                GraphQLError(
                    f"introspection is disabled on this server (`{node.name.value}`); an "
                    "administrator enables it with IOTDECK_GRAPHQL_INTROSPECTION=true",
                    node,
                    extensions={"code": VALIDATION_FAILED},
                )
            )


def query_limits(settings: Settings) -> Callable[[], QueryLimits]:
    """A factory of the extension: strawberry builds a fresh one per operation."""
    return functools.partial(QueryLimits, settings=settings)


class WebSocketOperationLimit(SchemaExtension):
    """Counts each operation sent over a WebSocket against its client's request limit.

    The HTTP middleware (app/web/limiter.py) counts requests, so a socket counts once, when it
    opens; every query, mutation or subscription sent over it is counted here, before
    validation, and refused with RATE_LIMITED (and `retryAfter`) when over.
    """

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings

    async def on_validate(self) -> AsyncIterator[None]:
        """Refuse the operation before it is validated, when its client is over the limit."""
        request = self.execution_context.context.request
        if isinstance(request, WebSocket):
            limiter = request_limiter(self.settings.rate_limit, self.settings.redis_url)
            seconds = await limiter.retry_after(client_of(request, self.settings))
            if seconds is not None:
                metrics.RATE_LIMIT_REFUSALS.labels("graphql").inc()
                self.execution_context.pre_execution_errors = [_rate_limited(seconds)]
        yield


def _rate_limited(seconds: float) -> GraphQLError:
    error = rate_limited_error(seconds)
    return GraphQLError(error["message"], extensions=error["extensions"])


def websocket_operation_limit(settings: Settings) -> Callable[[], WebSocketOperationLimit]:
    """A factory of the extension: strawberry builds a fresh one per operation."""
    return functools.partial(WebSocketOperationLimit, settings=settings)
