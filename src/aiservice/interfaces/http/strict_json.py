"""Strict JSON for request bodies: declared as JSON (else a 415), no object repeats a key, nesting stays
under a bound, and no string holds a NUL (which PostgreSQL's text type cannot store: a 422 naming the
field rather than a 500).

Parsers disagree on repeated keys (first wins, last wins, error), so a body that one component reads
one way and another reads another is refused before any of them sees it. The check is cheap on the
hot path: orjson parses (microseconds), one walk counts the object members and the nesting, and only
when that count differs from the body's colons (a repeated key, or an escaped colon) does the exact
but slower parse run, which names the repeated key.

The document a strict body was read into is kept (``strict_document``): the body middleware leaves it
in the request's scope under ``PARSED_BODY`` for a route that would otherwise parse the same body again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

import orjson


@dataclass(frozen=True)
class JsonViolation:
    """Why a body that parses as JSON is still refused, as problem fields."""

    code: str
    title: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    status: int = 400


class _TooDeep(Exception):
    pass


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


PARSED_BODY = "aiservice.parsed_json"  # the scope key of a strict body's document
NOT_PARSED: Any = object()  # no document: the body is no JSON, or is refused


def violation(body: bytes, max_depth: int) -> JsonViolation | None:
    """What is wrong with ``body``; None when it is strict JSON, or no JSON at all (the route that
    parses it reports that in its own terms)."""
    return strict_document(body, max_depth)[0]


def strict_document(body: bytes, max_depth: int) -> tuple[JsonViolation | None, Any]:
    """``violation(body)``, and the document ``body`` holds when it has none (else ``NOT_PARSED``).

    The document is orjson's, or, for JSON orjson refuses (NaN, for one), Python's: the values Python's
    ``json.loads`` gives, except that an integer past 64 bits is orjson's nearest float."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():  # orjson stops at 1024 levels
            return _too_deep(max_depth), NOT_PARSED
        return _exact(body, max_depth)  # JSON orjson refuses (NaN, huge integers) may still be JSON
    try:
        members = _members(document, max_depth)
    except _TooDeep:
        return _too_deep(max_depth), NOT_PARSED
    # Every member has one colon outside strings; colons inside strings were counted by the walk.
    # A repeated key collapses into one member, so the counts then differ. ``\u`` escapes can hide a
    # colon from the raw count: those bodies take the exact path.
    if members == body.count(b":") and b"\\u" not in body:
        return None, document
    found, _ = _exact(body, max_depth)
    return found, document if found is None else NOT_PARSED


def _members(node: Any, depth_left: int) -> int:
    """Object members plus the colons inside strings; raises ``_TooDeep`` past the depth bound.

    This walk is on the predict path: a list of scalars is passed over at once, and the objects of a
    list of objects (a batch's rows) are counted together, each step in C over all of them."""
    kind = type(node)
    if kind is str:
        return int(node.count(":"))
    if kind is not dict and kind is not list:
        return 0
    if depth_left == 0:
        raise _TooDeep
    if kind is dict:
        return _object_members([node], depth_left)
    kinds = set(map(type, node))
    if kinds <= _SCALARS:
        return 0
    if kinds == _OBJECTS:
        if depth_left == 1:
            raise _TooDeep
        return _object_members(node, depth_left - 1)
    return _inner_members(node, depth_left)


def _object_members(objects: list[dict[str, Any]], depth_left: int) -> int:
    """The members of ``objects``, which sit ``depth_left`` levels above the bound, and what they hold."""
    count = sum(map(len, objects))
    keys = "".join(chain.from_iterable(objects))
    if ":" in keys:
        count += keys.count(":")
    if _SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, objects)))):
        return count
    return count + _inner_members(chain.from_iterable(map(dict.values, objects)), depth_left)


def _inner_members(values: Iterable[Any], depth_left: int) -> int:
    """Members of the values of one object or list, which sits ``depth_left`` levels above the bound."""
    count = 0
    for value in values:
        kind = type(value)
        if kind is dict or kind is list:
            count += _members(value, depth_left - 1)
        elif kind is str and ":" in value:
            count += value.count(":")
    return count


_SCALARS = frozenset({int, float, bool, type(None)})
_OBJECTS = frozenset({dict})


def _exact(body: bytes, max_depth: int) -> tuple[JsonViolation | None, Any]:
    try:
        document = json.loads(body, object_pairs_hook=_unique)
    except _RepeatedKey as exc:
        repeated = JsonViolation(
            "duplicate-json-key",
            "Duplicate JSON key",
            f"The request body repeats the key {exc.key!r} in one object; each key may appear once.",
            {"key": exc.key},
        )
        return repeated, NOT_PARSED
    except RecursionError:
        return _too_deep(max_depth), NOT_PARSED
    except ValueError:
        return None, NOT_PARSED
    try:
        _members(document, max_depth)
    except _TooDeep:
        return _too_deep(max_depth), NOT_PARSED
    nul = nul_field(document, "body")  # only here: a NUL is escaped as \u0000, which takes this path
    if nul is not None:
        return nul_violation(nul), NOT_PARSED
    return None, document


_FORM = b"application/x-www-form-urlencoded"


def is_json_media_type(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/*+json``, any case, with or without parameters (charset)."""
    if content_type is None:
        return False
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


def media_type_violation(content_type: bytes | None) -> JsonViolation | None:
    """Why a body declared as ``content_type`` is refused by a route that takes JSON; None for JSON.

    A body without a Content-Type is refused too (RFC 9110 lets a recipient treat it as bytes), and
    a form gets a hint: it is what ``curl -d`` sends unless told otherwise."""
    if is_json_media_type(content_type):
        return None
    if content_type is None or not content_type.strip():
        detail = "This route takes a JSON body, but the request has no Content-Type"
    elif content_type.partition(b";")[0].strip().lower() == _FORM:
        detail = (
            f"This route takes a JSON body, not a form ({_FORM.decode()}, which curl -d sends unless "
            "told otherwise: use curl --json, or add -H 'Content-Type: application/json')"
        )
    else:
        declared = content_type.decode("latin-1").partition(";")[0].strip()[:100]
        detail = f"This route takes a JSON body, not {declared}"
    return JsonViolation(
        "unsupported-media-type",
        "Unsupported media type",
        f"{detail}; send it with Content-Type: application/json.",
        {"errors": [{"field": "header.Content-Type", "message": "must be application/json"}]},
        status=415,
    )


def nul_violation(where: str) -> JsonViolation:
    return JsonViolation(
        "validation-error",
        "Invalid input",
        f"{where} holds a NUL character, which no text field, name or query accepts.",
        {"errors": [{"field": where, "message": "must not contain NUL characters"}]},
        status=422,
    )


def url_nul_field(path: str, query_string: bytes) -> str | None:
    """``path``, or ``query.NAME``, when the (decoded) path or a query parameter holds a NUL."""
    if "\x00" in path:
        return "path"
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return f"query.{name}"
    return None


def nul_field(node: Any, path: str) -> str | None:
    """The dotted path of the first key or string holding a NUL (PostgreSQL text cannot store one)."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        inner = f"{path}.{key}"
        if isinstance(key, str) and "\x00" in key:
            return inner
        found = nul_field(value, inner)
        if found is not None:
            return found
    return None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return unique


def _too_deep(max_depth: int) -> JsonViolation:
    return JsonViolation(
        "json-too-deep",
        "JSON nested too deeply",
        f"The request body nests arrays and objects more than {max_depth} levels deep.",
        {"maxDepth": max_depth},
    )
