"""The bad-input corpus (issue 12): every mutation argument and hostile values for it.

The arguments come from the live schema, so a new mutation or a new input field is in the
corpus as soon as it exists. Each argument's values are chosen by its GraphQL type: wrong
types, empty and blank strings, huge values (1 MiB, 10^400, 100,000 items), odd unicode,
injection strings, malformed ids, out-of-range and non-finite numbers, null and absence.
`domains.py` says which of them each argument legitimately accepts.
"""

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    build_schema,
    get_named_type,
    is_list_type,
    is_non_null_type,
)

from app.graphql.schema import create_schema
from tests.integration.graphql.client import make_settings


class _Missing:
    """The argument or input field left out of the operation altogether."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
MEBIBYTE = "x" * 2**20
HUGE_LIST = list(range(100_000))
HUGE_NUMBER = 10**400  # a JSON number of 401 digits: no float or 32-bit Int holds it
NAN, INFINITY = float("nan"), float("inf")  # sent as JSON's non-standard NaN/Infinity tokens
INJECTIONS = (
    "'; DROP TABLE users; --",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "$(reboot)",
)
ODD_UNICODE = (
    "nul\u0000byte",  # NUL: PostgreSQL cannot store it in text or jsonb
    "\u202egnp.exe",  # right-to-left override
    "a\u200db\u200dc",  # zero-width joiners
    "\U0001f525\U0001f4a7\U0001f321\ufe0f",  # emoji
    "Z\u0351\u0300\u0301\u0302\u0303",  # combining marks
)
BLANKS = ("", " \t\n ")
NESTED = "-" * 1000 + "x > 1"  # a condition 1,000 levels deep: text elsewhere
MALFORMED_IDS = (
    "not-a-uuid",
    "12",
    "11111111-2222-4333-8444-55555555555",  # one digit short
    "11111111-2222-4333-8444-55555555555g",
)
# a JSON object an argument taking objects stores as it is: the text inside is data
ODD_OBJECT = {"note": INJECTIONS[0], "odd": ODD_UNICODE[1], "emoji": ODD_UNICODE[3]}

Values = list[tuple[str, Any]]


@dataclass(frozen=True)
class Argument:
    """A mutation argument, or a field of an input object one takes (`path` from the top)."""

    mutation: str
    path: tuple[str, ...]
    type: GraphQLInputType

    @property
    def name(self) -> str:
        """The name a refusal must give: the argument's or the input field's, as spelt."""
        return self.path[-1]

    @property
    def key(self) -> str:
        """`mutation.argument[.field]`, the key of `DOMAINS`."""
        return ".".join((self.mutation, *self.path))

    @property
    def required(self) -> bool:
        """Non-null in the schema: null and absence are refused by GraphQL itself."""
        return is_non_null_type(self.type)


def mutation_arguments() -> dict[str, list[Argument]]:
    """Every mutation of the live schema and its arguments and input fields, depth first."""
    # the schema as the server builds it, read in process: introspection over HTTP may be off
    sdl = create_schema(make_settings("sqlite://")).as_str()
    mutations = build_schema(sdl).mutation_type
    assert mutations is not None
    return {
        name: list(_arguments(name, (), field.args, frozenset()))
        for name, field in mutations.fields.items()
    }


def _arguments(
    mutation: str, prefix: tuple[str, ...], fields: Mapping[str, Any], seen: frozenset[str]
) -> Iterator[Argument]:
    for name, definition in fields.items():
        path = (*prefix, name)
        yield Argument(mutation, path, definition.type)
        named = get_named_type(definition.type)
        if isinstance(named, GraphQLInputObjectType) and named.name not in seen:
            if not is_list_type(getattr(definition.type, "of_type", definition.type)):
                yield from _arguments(mutation, path, named.fields, seen | {named.name})


def _wrong_types(*values: Any) -> Values:
    return [(f"wrong type {json.dumps(value)[:20]}", value) for value in values]


def _strings() -> Values:
    return [
        *[(f"blank {value!r}", value) for value in BLANKS],
        ("1 MiB", MEBIBYTE),
        ("nested 1,000 deep", NESTED),
        *[(f"injection {value!r}", value) for value in INJECTIONS],
        *[(f"unicode {value!r}", value) for value in ODD_UNICODE],
    ]


_COMMON: Values = [("list of 100,000", HUGE_LIST), ("10^400", HUGE_NUMBER)]
_BY_TYPE: dict[str, Values] = {
    "String": [*_wrong_types(5, 1.5, True, {"a": 1}, ["x"]), *_strings()],
    # an Int becomes an ID's text: 5 is the malformed id "5"
    "ID": [
        *_wrong_types(5, 1.5, True, {"a": 1}, ["x"]),
        *_strings(),
        *[(f"malformed id {value!r}", value) for value in MALFORMED_IDS],
    ],
    "Int": [
        *_wrong_types("5", 1.5, True, {"a": 1}, [1], "", "1" + "0" * 400),
        ("NaN", NAN),
        ("NaN text", "NaN"),
        ("2^31", 2**31),
        ("-2^31-1", -(2**31) - 1),
        ("-1", -1),
        ("0", 0),
        ("2^31-1", 2**31 - 1),
    ],
    "Float": [
        *_wrong_types("1.5", True, {"a": 1}, [1.0], ""),
        ("NaN", NAN),
        ("Infinity", INFINITY),
        ("-Infinity", -INFINITY),
        *[(f"{value} text", value) for value in ("NaN", "Infinity", "-Infinity")],
        ("-1.5", -1.5),
    ],
    "Boolean": _wrong_types("true", "false", 1, 0, "", "yes", {"a": 1}, [True]),
    "JSON": [
        *_wrong_types("x", 5, True, [1], ""),
        ("1 MiB text", MEBIBYTE),
        ("1 MiB inside", {"blob": MEBIBYTE}),
        ("NaN inside", {"value": NAN}),
        ("NUL inside", {"note": ODD_UNICODE[0]}),
        ("NUL key", {"\u0000": 1}),
        ("injection text", INJECTIONS[0]),
        ("odd object", ODD_OBJECT),
    ],
}
_OBJECT: Values = [*_wrong_types(5, "x", True, ["x"]), ("1 MiB", MEBIBYTE)]


def _enum(named: GraphQLEnumType) -> Values:
    first = next(iter(named.values))
    return [
        *_wrong_types(5, {"a": 1}, [first], ""),
        ("lower case", first.lower()),
        ("padded", f" {first} "),
        ("unknown", "ROOT"),
        ("injection", INJECTIONS[0]),
        ("1 MiB", MEBIBYTE),
    ]


def hostile_values(argument: Argument) -> Values:
    """The corpus for one argument, by its type; null always, absence when it is required."""
    named = get_named_type(argument.type)
    if isinstance(named, GraphQLEnumType):
        values = _enum(named)
    elif isinstance(named, GraphQLInputObjectType):
        values = list(_OBJECT)
    else:
        values = list(_BY_TYPE[named.name])
    values += [*_COMMON, ("null", None)]
    if argument.required:
        values.append(("missing", MISSING))
    return values


_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
MAX_LITERAL_ITEMS = 1000


def literal(value: Any, types: Mapping[tuple[str, ...], GraphQLInputType], path: tuple) -> str:
    """`value` written inline in the document at `path` (an enum's names bare).

    ValueError when GraphQL has no literal for it (NaN, infinities, keys that are not names)
    or when the document would be refused whole for its length, before any argument is
    looked at (the token limit: GRAPHQL_PARSE_FAILED).
    """
    kind = types.get(path)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"no GraphQL literal for {value}")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        enum = kind is not None and isinstance(get_named_type(kind), GraphQLEnumType)
        return value if enum and _NAME.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        if len(value) > MAX_LITERAL_ITEMS:
            raise ValueError("too many tokens for a document")
        return "[" + ", ".join(literal(item, types, path) for item in value) + "]"
    if not all(_NAME.fullmatch(key) for key in value):
        raise ValueError("no GraphQL literal for an object whose keys are not names")
    fields = (f"{key}: {literal(item, types, (*path, key))}" for key, item in value.items())
    return "{" + ", ".join(fields) + "}"
