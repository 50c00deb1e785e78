"""Stages that refuse or clean writes: by key prefix, by value size, and a JSON
sanitizer that removes named fields before values are stored.

Each stage is a plain synchronous class: ``process(write)`` returns the very
same ``Write`` when it has nothing to change, a changed copy otherwise, or
raises an ``MkvError`` that refuses the whole write. Work is linear in the
size of the write. Error messages name the stage and may show a key or a
configured prefix (through ``shown``), never a value.

Spec arguments (the text after ``name:``) are comma-separated items. An item
is percent-decoded, so a byte that cannot be written plainly, such as a comma,
a space or a dot in a field name, is written ``%XX`` (``%2C``, ``%20``,
``%2E``); a literal ``%`` is ``%25``.
"""

from __future__ import annotations

import bisect
import json
import json.encoder
import operator
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote_to_bytes

import attrs

from mkv.errors import InvalidArgumentError, PermissionDeniedError, shown
from mkv.records import Write
from mkv.units import parse_size

if TYPE_CHECKING:
    from mkv.pipeline.base import StageContext

__all__ = [
    "FACTORIES",
    "MaxValueSize",
    "RejectKeyPrefix",
    "SanitizeJson",
    "decode_item",
    "parse_stage_arguments",
]


# --- spec arguments ---------------------------------------------------------

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_stage_arguments(stage: str, argument: str) -> tuple[str, ...]:
    """The comma-separated items of a stage spec's argument, still percent-encoded.

    ``""`` gives ``()``; spaces around an item are dropped.

    Raises:
        InvalidArgumentError: an empty item (``a,,b`` or a trailing comma), a
            space or control character inside an item, or a ``%`` not followed
            by two hex digits.
    """
    if not argument.strip():
        return ()
    items = tuple(item.strip() for item in argument.split(","))
    for item in items:
        if not item:
            raise InvalidArgumentError(
                f"The {stage} stage got an empty item in '{shown(argument)}'."
            )
        if any(c.isspace() or not c.isprintable() for c in item):
            raise InvalidArgumentError(
                f"The {stage} stage got a space or control character in "
                f"'{shown(item)}'; write it as %XX, for example %20 for a space."
            )
        if _BAD_ESCAPE.search(item):
            raise InvalidArgumentError(
                f"The {stage} stage got a '%' not followed by two hex digits in "
                f"'{shown(item)}'; write a literal '%' as %25."
            )
    return items


def decode_item(item: str) -> bytes:
    """The bytes an item from ``parse_stage_arguments`` stands for."""
    # unquote_to_bytes encodes the text as UTF-8 first, then decodes %XX.
    return unquote_to_bytes(item)


def _decode_text(stage: str, item: str) -> str:
    try:
        return decode_item(item).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"The {stage} stage got '{shown(item)}', whose %XX escapes are not UTF-8 text."
        ) from None


# --- reject-prefix ----------------------------------------------------------


def _prefix_free(prefixes: Iterable[bytes]) -> tuple[bytes, ...]:
    """Sorted, with every prefix that extends another one dropped."""
    kept: list[bytes] = []
    for prefix in sorted(set(prefixes)):
        if not isinstance(prefix, bytes) or not prefix:
            raise ValueError("each prefix must be non-empty bytes")
        # Sorted order puts every extension of a prefix right after it, so
        # comparing with the last kept one is enough.
        if not (kept and prefix.startswith(kept[-1])):
            kept.append(prefix)
    if not kept:
        raise ValueError("reject-prefix needs at least one prefix")
    return tuple(kept)


@attrs.frozen
class RejectKeyPrefix:
    """Refuses, with PERMISSION_DENIED, any write that puts or deletes a key
    starting with one of ``prefixes``.

    Spec: ``reject-prefix:secret/,tmp/``.
    """

    # Kept prefix-free and sorted, so that a key's only candidate is the
    # largest prefix not greater than it: one bisection per key, whatever
    # the number of prefixes.
    prefixes: tuple[bytes, ...] = attrs.field(converter=_prefix_free)
    # Unannotated: a class attribute, not an attrs field, which is what the
    # ``SyncStage`` protocol's ``name: str`` accepts on a frozen class.
    name = "reject-prefix"

    def process(self, write: Write) -> Write:
        for key, _ in write.puts:
            self._check(key)
        for key in write.deletes:
            self._check(key)
        return write

    def refused_by(self, key: bytes) -> bytes | None:
        """The configured prefix ``key`` starts with, if any."""
        i = bisect.bisect_right(self.prefixes, key)
        if i and key.startswith(self.prefixes[i - 1]):
            return self.prefixes[i - 1]
        return None

    def _check(self, key: bytes) -> None:
        prefix = self.refused_by(key)
        if prefix is not None:
            raise PermissionDeniedError(
                f"Writes to keys starting with '{shown(prefix)}' are refused in this "
                f"partition (stage {self.name})."
            )

    @classmethod
    def from_spec(cls, argument: str, context: StageContext | None = None) -> RejectKeyPrefix:
        """``reject-prefix:<prefix>[,<prefix>...]``.

        Raises:
            InvalidArgumentError: no prefix, or a malformed item.
        """
        items = parse_stage_arguments(cls.name, argument)
        if not items:
            raise InvalidArgumentError(
                "The reject-prefix stage needs at least one key prefix, "
                "for example 'reject-prefix:secret/,tmp/'."
            )
        return cls(decode_item(item) for item in items)


# --- max-value-size ---------------------------------------------------------


def _check_limit(_: object, __: object, limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("max-value-size needs a limit in bytes, zero or more")


@attrs.frozen
class MaxValueSize:
    """Refuses, with INVALID_ARGUMENT, any write that puts a value longer than
    ``limit`` bytes (a limit of 0 allows only empty values).

    Spec: ``max-value-size:4096``, or with a unit: ``max-value-size:64KiB``.
    """

    limit: int = attrs.field(validator=_check_limit)
    name = "max-value-size"

    def process(self, write: Write) -> Write:
        if not write.puts:
            return write
        # The common case, nothing too long, stays in C: no Python loop per put.
        if max(map(len, map(operator.itemgetter(1), write.puts))) <= self.limit:
            return write
        key, value = next((k, v) for k, v in write.puts if len(v) > self.limit)
        raise InvalidArgumentError(
            f"The value for key '{shown(key)}' is {len(value)} bytes; this partition's "
            f"limit is {self.limit} bytes (stage {self.name})."
        )

    @classmethod
    def from_spec(cls, argument: str, context: StageContext | None = None) -> MaxValueSize:
        """``max-value-size:<bytes>``, or with a unit (``64KiB``, ``1MiB``: ``mkv.units``).

        Raises:
            InvalidArgumentError: anything else.
        """
        try:
            limit = parse_size(argument)
        except ValueError:
            raise InvalidArgumentError(
                "The max-value-size stage takes a size in bytes, for example "
                f"'max-value-size:4096' or 'max-value-size:64KiB'; got '{shown(argument)}'."
            ) from None
        return cls(limit)


# --- sanitize-json ----------------------------------------------------------

# Paths to remove as a tree of field names: a leaf (None) removes the field,
# a subtree descends into the field's value.
_Tree: TypeAlias = "dict[str, _Tree | None]"


class _Object(list[tuple[str, Any]]):
    """A parsed JSON object as its (name, value) pairs, in document order.

    Pairs rather than a dict, so that a rewritten document keeps its field
    order and its duplicate names (every duplicate of a removed name goes).
    """


class _Number(str):
    """A JSON number as its literal text, written back byte for byte (a float
    would turn ``1.10`` into ``1.1`` and big integers into approximations)."""


class _Token(str):
    """Punctuation on the serializer's stack, never confused with a string value."""


_OPEN_OBJECT, _CLOSE_OBJECT = _Token("{"), _Token("}")
_OPEN_ARRAY, _CLOSE_ARRAY = _Token("["), _Token("]")
_COMMA, _COLON = _Token(","), _Token(":")
_NOT_JSON = object()


def _refuse_constant(text: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259), although Python's parser takes them.
    raise ValueError(text)


def _parse(value: bytes) -> object:
    """The document in ``value``, or ``_NOT_JSON``."""
    try:
        return json.loads(
            value.decode("utf-8"),
            object_pairs_hook=_Object,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_refuse_constant,
        )
    # RecursionError: nesting deeper than the parser's stack allows; the value
    # is stored as it is (or refused when strict), not a crash.
    except (ValueError, RecursionError):
        return _NOT_JSON


def _remove(document: object, tree: _Tree) -> bool:
    """Remove the paths in ``tree`` from ``document`` in place; whether any was there.

    Arrays are transparent: a path applies to every element, at any depth, so
    ``users.password`` also cleans ``{"users": [{"password": ...}, ...]}``;
    a sanitizer that stopped at arrays would keep the secrets it was set to
    remove. Iterative, so the depth of a document cannot exhaust the stack.
    """
    removed = False
    stack: list[tuple[object, _Tree]] = [(document, tree)]
    while stack:
        node, paths = stack.pop()
        if isinstance(node, _Object):
            kept = []
            for pair in node:
                name, child = pair
                if name not in paths:
                    kept.append(pair)
                    continue
                subtree = paths[name]
                if subtree is None:
                    continue
                kept.append(pair)
                stack.append((child, subtree))
            if len(kept) != len(node):
                node[:] = kept
                removed = True
        elif isinstance(node, list):
            stack.extend((item, paths) for item in node)
    return removed


def _dump(document: object, *, ascii_only: bool) -> str:
    """Compact JSON text for a document from ``_parse``. Iterative, like ``_remove``."""
    quote = json.encoder.encode_basestring_ascii if ascii_only else json.encoder.encode_basestring
    out: list[str] = []
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token | _Number):
            out.append(item)
        elif isinstance(item, str):
            out.append(quote(item))
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif item is None:
            out.append("null")
        elif isinstance(item, _Object):
            # Pushed in reverse, popped in document order.
            stack.append(_CLOSE_OBJECT)
            for i in range(len(item) - 1, -1, -1):
                name, value = item[i]
                stack += (value, _COLON, name)
                if i:
                    stack.append(_COMMA)
            stack.append(_OPEN_OBJECT)
        elif isinstance(item, list):
            stack.append(_CLOSE_ARRAY)
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(_COMMA)
            stack.append(_OPEN_ARRAY)
        else:  # pragma: no cover - _parse makes nothing else
            raise TypeError(f"unexpected {type(item).__name__} in a parsed document")
    return "".join(out)


def _encode(document: object) -> bytes:
    try:
        return _dump(document, ascii_only=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate, from a \ud800 escape in the input: it has no UTF-8
        # form, so write the document with \u escapes, as it came in.
        return _dump(document, ascii_only=True).encode("ascii")


def _to_paths(fields: Iterable[str | tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    paths = set()
    for field in fields:
        path = tuple(field.split(".")) if isinstance(field, str) else tuple(field)
        if not path or not all(isinstance(part, str) and part for part in path):
            raise ValueError(f"{field!r} is not a field path")
        paths.add(path)
    return tuple(sorted(paths))


@attrs.frozen
class SanitizeJson:
    """Removes named fields from JSON values before they are stored.

    Each field is a path: ``password`` is a top-level field, ``user.token`` the
    field ``token`` of the object in field ``user`` (a tuple of names is a
    path too, for names holding a dot). Arrays are transparent (see
    ``_remove``). A value that changes is written back compactly, with its
    field order, string contents and number literals kept; one that does not
    change is stored byte for byte as sent.

    A value that is not JSON text in UTF-8 (binary data, plain text, near-JSON
    such as a trailing comma or NaN) is stored unchanged: the sanitizer cleans
    JSON and does not decide what a partition may hold. With ``strict`` it is
    refused with INVALID_ARGUMENT instead, for partitions that hold only JSON
    and must never store a field the sanitizer could not see. ``strict`` with
    no fields just checks that every value is JSON.

    Specs: ``sanitize-json:password,ssn,user.token``;
    ``sanitize-json-strict[:<fields>]``.
    """

    fields: tuple[tuple[str, ...], ...] = attrs.field(converter=_to_paths)
    strict: bool = False
    _tree: _Tree = attrs.field(init=False, repr=False, eq=False)
    # UTF-8 of every name a removal needs (the last of each path).
    _needles: tuple[bytes, ...] = attrs.field(init=False, repr=False, eq=False)
    name = "sanitize-json"

    @_tree.default
    def _build_tree(self) -> _Tree:
        tree: _Tree = {}
        # Sorted, shorter paths first: "user" before "user.token", which it covers.
        for path in self.fields:
            node = tree
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if child is None:
                    break
                node = child
            else:
                node[path[-1]] = None
        return tree

    @_needles.default
    def _build_needles(self) -> tuple[bytes, ...]:
        return tuple({path[-1].encode("utf-8") for path in self.fields})

    def process(self, write: Write) -> Write:
        puts: list[tuple[bytes, bytes]] | None = None
        for i, (key, value) in enumerate(write.puts):
            cleaned = self._clean(key, value)
            if cleaned is not value:
                if puts is None:
                    # One copy per write, made only when a value changes.
                    puts = list(write.puts)
                puts[i] = (key, cleaned)
        return write if puts is None else attrs.evolve(write, puts=tuple(puts))

    def _clean(self, key: bytes, value: bytes) -> bytes:
        if not self.strict and not self._may_hold_fields(value):
            return value
        document = _parse(value)
        if document is _NOT_JSON:
            if self.strict:
                raise InvalidArgumentError(
                    f"The value for key '{shown(key)}' is not JSON text in UTF-8, which "
                    "this partition requires (stage sanitize-json-strict)."
                )
            return value
        return _encode(document) if _remove(document, self._tree) else value

    def _may_hold_fields(self, value: bytes) -> bool:
        # Sound shortcut past the parser: without a backslash no name is
        # escaped, so a field to remove appears as its plain UTF-8 bytes.
        return b"\\" in value or any(needle in value for needle in self._needles)

    @classmethod
    def from_spec(cls, argument: str, context: StageContext | None = None) -> SanitizeJson:
        """``sanitize-json:<field>[,<field>...]``, a field being ``name`` or
        ``name.name...``; each name percent-decoded (``%2E`` for a dot in a name).

        Raises:
            InvalidArgumentError: no field, or a malformed one.
        """
        fields = cls._parse_fields(cls.name, argument)
        if not fields:
            raise InvalidArgumentError(
                "The sanitize-json stage needs at least one field to remove, "
                "for example 'sanitize-json:password,user.token'."
            )
        return cls(fields)

    @classmethod
    def from_strict_spec(cls, argument: str, context: StageContext | None = None) -> SanitizeJson:
        """``sanitize-json-strict[:<field>,...]``: the same, refusing non-JSON values."""
        return cls(cls._parse_fields("sanitize-json-strict", argument), strict=True)

    @staticmethod
    def _parse_fields(stage: str, argument: str) -> list[tuple[str, ...]]:
        fields = []
        for item in parse_stage_arguments(stage, argument):
            parts = item.split(".")
            if not all(parts):
                raise InvalidArgumentError(
                    f"The {stage} stage got '{shown(item)}', which has an empty name between dots."
                )
            fields.append(tuple(_decode_text(stage, part) for part in parts))
        return fields


# What the pipeline registry needs to build these stages by name.
FACTORIES: dict[
    str, Callable[[str, StageContext], RejectKeyPrefix | MaxValueSize | SanitizeJson]
] = {
    RejectKeyPrefix.name: RejectKeyPrefix.from_spec,
    MaxValueSize.name: MaxValueSize.from_spec,
    SanitizeJson.name: SanitizeJson.from_spec,
    "sanitize-json-strict": SanitizeJson.from_strict_spec,
}
