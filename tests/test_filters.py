"""Filter and sanitizer stages: what they let through, what they refuse and how."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mkv.errors import InvalidArgumentError, PermissionDeniedError
from mkv.pipeline.base import StageContext, SyncStage
from mkv.pipeline.filters import (
    FACTORIES,
    MaxValueSize,
    RejectKeyPrefix,
    SanitizeJson,
    parse_stage_arguments,
)
from mkv.records import Write

SECRET = b"TOPSECRET-value-contents"


# --- spec arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "items"),
    [("", ()), ("  ", ()), ("a", ("a",)), ("a,b", ("a", "b")), (" a , b ", ("a", "b"))],
)
def test_stage_arguments_split_on_commas(argument: str, items: tuple[str, ...]) -> None:
    assert parse_stage_arguments("reject-prefix", argument) == items


@pytest.mark.parametrize(
    ("argument", "complaint"),
    [
        ("a,,b", "empty item"),
        ("a,", "empty item"),
        (",a", "empty item"),
        ("a b", "space or control"),
        ("a\tb", "space or control"),
        ("a\x00", "space or control"),
        ("100%", "two hex digits"),
        ("%zz", "two hex digits"),
        ("%2", "two hex digits"),
    ],
)
def test_malformed_stage_arguments_are_refused(argument: str, complaint: str) -> None:
    with pytest.raises(InvalidArgumentError, match=complaint) as caught:
        parse_stage_arguments("reject-prefix", argument)
    assert "reject-prefix" in caught.value.message


def test_every_factory_builds_a_sync_stage() -> None:
    examples = {
        "reject-prefix": "secret/",
        "max-value-size": "4096",
        "sanitize-json": "password",
        "sanitize-json-strict": "",
    }
    assert set(FACTORIES) == set(examples)
    context = StageContext("p1", Path())
    for name, argument in examples.items():
        assert isinstance(FACTORIES[name](argument, context), SyncStage)


# --- reject-prefix ----------------------------------------------------------


def test_reject_prefix_lets_other_keys_through_unchanged() -> None:
    stage = RejectKeyPrefix.from_spec("secret/,tmp/")
    write = Write(puts=[(b"public/a", SECRET), (b"secre", b"")], deletes=[b"tmp", b"x"])
    assert stage.process(write) is write
    assert stage.process(Write()) == Write()


@pytest.mark.parametrize(
    "write",
    [
        Write(puts=[(b"ok", b"1"), (b"secret/pw", SECRET)]),
        Write(puts=[(b"ok", b"1")], deletes=[b"secret/pw"]),
        Write(puts=[(b"secret/", SECRET)]),
    ],
    ids=["put", "delete", "prefix-itself"],
)
def test_reject_prefix_refuses_puts_and_deletes_naming_the_prefix(write: Write) -> None:
    stage = RejectKeyPrefix.from_spec("secret/,tmp/")
    with pytest.raises(PermissionDeniedError) as caught:
        stage.process(write)
    message = caught.value.message
    assert "'secret/'" in message
    assert "reject-prefix" in message
    assert SECRET.decode() not in message


def test_reject_prefix_spec_is_percent_decoded() -> None:
    stage = RejectKeyPrefix.from_spec("a%2Cb,%00bin,caf%C3%A9")
    assert stage.prefixes == (b"\x00bin", b"a,b", "café".encode())
    with pytest.raises(PermissionDeniedError, match=r"\\x00bin"):
        stage.process(Write(deletes=[b"\x00binary"]))


def test_reject_prefix_keeps_the_shortest_of_nested_prefixes() -> None:
    assert RejectKeyPrefix([b"ab", b"a", b"abc", b"b", b"a"]).prefixes == (b"a", b"b")


def test_reject_prefix_needs_a_prefix() -> None:
    with pytest.raises(InvalidArgumentError, match="at least one key prefix"):
        RejectKeyPrefix.from_spec("")
    with pytest.raises(ValueError, match="at least one"):
        RejectKeyPrefix([])
    with pytest.raises(ValueError, match="non-empty"):
        RejectKeyPrefix([b"a", b""])


@given(st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=12), st.binary(max_size=5))
def test_reject_prefix_agrees_with_brute_force(prefixes: list[bytes], key: bytes) -> None:
    found = RejectKeyPrefix(prefixes).refused_by(key)
    if any(key.startswith(p) for p in prefixes):
        assert found is not None
        assert found in prefixes
        assert key.startswith(found)
    else:
        assert found is None


# --- max-value-size ---------------------------------------------------------


def test_max_value_size_allows_values_up_to_the_limit_unchanged() -> None:
    stage = MaxValueSize(4)
    write = Write(puts=[(b"a", b"1234"), (b"b", b"")], deletes=[b"c" * 100])
    assert stage.process(write) is write
    assert stage.process(Write(deletes=[b"x"])).deletes == [b"x"]


def test_max_value_size_refuses_a_longer_value_saying_size_and_limit() -> None:
    stage = MaxValueSize(4)
    write = Write(puts=[(b"fine", b"1234"), (b"big", SECRET)])
    with pytest.raises(InvalidArgumentError) as caught:
        stage.process(write)
    message = caught.value.message
    assert f"is {len(SECRET)} bytes" in message
    assert "limit is 4 bytes" in message
    assert "'big'" in message
    assert SECRET.decode() not in message


@pytest.mark.parametrize(
    ("argument", "limit"),
    [("4096", 4096), ("0", 0), (" 12 ", 12), ("64KiB", 65536), ("1MiB", 1 << 20)],
)
def test_max_value_size_spec(argument: str, limit: int) -> None:
    assert MaxValueSize.from_spec(argument).limit == limit


@pytest.mark.parametrize(
    "argument", ["", "-1", "4.5", "4kb", "4 KiB", "0x10", "١٢", "9" * 19, "4096,8192"]
)
def test_max_value_size_spec_errors(argument: str) -> None:
    with pytest.raises(InvalidArgumentError, match="max-value-size:4096"):
        MaxValueSize.from_spec(argument)


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_max_value_size_limit_must_be_a_count_of_bytes(bad: Any) -> None:
    with pytest.raises(ValueError, match="limit in bytes"):
        MaxValueSize(bad)


# --- sanitize-json ----------------------------------------------------------


def sanitized(value: bytes, spec: str = "password,user.token") -> bytes:
    [(_, out)] = SanitizeJson.from_spec(spec).process(Write(puts=[(b"k", value)])).puts
    return out


def test_top_level_fields_are_removed_and_the_value_written_compactly() -> None:
    value = b'{ "name": "ann", "password": "hunter2", "age": 3 }'
    assert sanitized(value) == b'{"name":"ann","age":3}'


def test_dotted_paths_reach_into_nested_objects_only_where_named() -> None:
    value = json.dumps(
        {"user": {"token": "t", "id": 1}, "token": "kept", "other": {"token": "kept"}}
    ).encode()
    assert json.loads(sanitized(value)) == {
        "user": {"id": 1},
        "token": "kept",
        "other": {"token": "kept"},
    }


def test_paths_apply_through_arrays_at_any_depth() -> None:
    value = json.dumps(
        {"user": [{"token": 1, "id": 1}, [{"token": 2}], "x", 5], "password": [1]}
    ).encode()
    assert json.loads(sanitized(value)) == {"user": [{"id": 1}, [{}], "x", 5]}
    assert json.loads(sanitized(b'[{"password": 1, "a": 2}, [{"password": 3}]]')) == [
        {"a": 2},
        [{}],
    ]


def test_deeply_nested_documents_are_cleaned_without_recursion() -> None:
    depth = 500  # within the parser's limit, deep enough to matter for a recursive walk
    value = b'{"user":' + b"[" * depth + b'{"token":1,"x":2}' + b"]" * depth + b"}"
    assert sanitized(value) == value.replace(b'"token":1,', b"")


def test_a_removed_parent_covers_its_children() -> None:
    assert sanitized(b'{"user": {"token": 1}, "a": 1}', "user.token,user") == b'{"a":1}'


def test_every_duplicate_of_a_removed_field_goes_and_other_duplicates_stay() -> None:
    value = b'{"password":1,"a":1,"password":2,"a":2}'
    assert sanitized(value) == b'{"a":1,"a":2}'


def test_a_rewritten_value_keeps_number_literals_strings_and_order() -> None:
    value = (
        '{"z": 1.10, "big": 123456789012345678901234567890, "huge": 1e400, '
        '"neg": -0.0E+2, "s": "caf\u00e9 \\u00e9 \\"q\\" \\n", "lone": "\\ud800", '
        '"t": true, "f": false, "n": null, "e": {}, "l": [], "password": "x"}'
    ).encode()
    out = sanitized(value)
    assert out == (
        b'{"z":1.10,"big":123456789012345678901234567890,"huge":1e400,"neg":-0.0E+2,'
        b'"s":"caf\\u00e9 \\u00e9 \\"q\\" \\n","lone":"\\ud800","t":true,"f":false,'
        b'"n":null,"e":{},"l":[]}'
    )
    assert json.loads(out)["s"] == 'café é "q" \n'


def test_non_ascii_is_written_as_utf8_when_it_can_be() -> None:
    assert sanitized('{"s":"café","password":1}'.encode()) == '{"s":"café"}'.encode()


def test_an_escaped_field_name_is_still_removed() -> None:
    # The raw bytes never spell "password": the shortcut must not skip the parse.
    assert sanitized(b'{"pass\\u0077ord": 1, "a": 2}') == b'{"a":2}'


def test_field_names_may_hold_dots_and_commas_when_percent_encoded() -> None:
    value = b'{"a.b": 1, "a": {"b": 2}, "x,y": 3}'
    assert json.loads(sanitized(value, "a%2Eb,x%2Cy")) == {"a": {"b": 2}}
    assert SanitizeJson([("a.b",)]) == SanitizeJson.from_spec("a%2Eb")


@pytest.mark.parametrize(
    "value",
    [
        b"plain text with password",
        b"\xff\xfe password",
        b'{"password": 1,}',
        b'{"password": NaN}',
        b"\xef\xbb\xbf" + b'{"password": 1}',
        b"[" * 100_000 + b'"password"' + b"]" * 100_000,
        b'"password"',
        b"42",
    ],
    ids=["text", "not-utf8", "trailing-comma", "nan", "bom", "deep", "json-string", "number"],
)
def test_values_that_are_not_json_objects_pass_unchanged(value: bytes) -> None:
    write = Write(puts=[(b"k", value)])
    assert SanitizeJson.from_spec("password").process(write) is write


def test_json_without_the_fields_keeps_its_exact_bytes() -> None:
    write = Write(puts=[(b"k", b'{ "passwords": 1,\n "user": {"tok": 2} }')])
    assert SanitizeJson.from_spec("password,user.token").process(write) is write


def test_only_changed_values_are_replaced() -> None:
    untouched = (b"a", b'{"keep": 1}')
    write = Write(puts=[untouched, (b"b", b'{"password": 1}')], deletes=[b"d"], seq=3)
    out = SanitizeJson.from_spec("password").process(write)
    assert out.puts[0] is untouched
    assert out.puts[1] == (b"b", b"{}")
    assert (out.deletes, out.seq) == (write.deletes, write.seq)


@pytest.mark.parametrize(
    "value",
    [b"not json", b"\xff", b'{"a": NaN}', b"[" * 100_000],
    ids=["text", "not-utf8", "nan", "deep"],
)
def test_strict_refuses_values_that_are_not_json(value: bytes) -> None:
    stage = SanitizeJson.from_strict_spec("password")
    with pytest.raises(InvalidArgumentError) as caught:
        stage.process(Write(puts=[(b"ok", b"{}"), (b"bad", value)]))
    message = caught.value.message
    assert "'bad'" in message
    assert "not JSON" in message
    assert "sanitize-json-strict" in message


def test_strict_accepts_any_json_and_still_removes_fields() -> None:
    stage = SanitizeJson.from_strict_spec("")
    write = Write(puts=[(b"a", b"[1, 2]"), (b"b", b'"text"'), (b"c", b" null ")])
    assert stage.process(write) is write
    cleaned = SanitizeJson.from_strict_spec("password").process(
        Write(puts=[(b"k", b'{"password": 1}')])
    )
    assert cleaned.puts == ((b"k", b"{}"),)


def test_strict_message_never_holds_the_value() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        SanitizeJson.from_strict_spec("").process(Write(puts=[(b"k", SECRET)]))
    assert SECRET.decode() not in caught.value.message


@pytest.mark.parametrize(
    ("argument", "complaint"),
    [
        ("", "at least one field"),
        ("a..b", "empty name between dots"),
        (".a", "empty name between dots"),
        ("a.", "empty name between dots"),
        ("a,,b", "empty item"),
        ("%ff", "not UTF-8"),
    ],
)
def test_sanitize_json_spec_errors(argument: str, complaint: str) -> None:
    with pytest.raises(InvalidArgumentError, match=complaint):
        SanitizeJson.from_spec(argument)


def test_sanitize_json_fields_must_be_paths() -> None:
    with pytest.raises(ValueError, match="not a field path"):
        SanitizeJson(["a..b"])
    with pytest.raises(ValueError, match="not a field path"):
        SanitizeJson([()])


# Documents over a few names, so that the paths below often match.
names = st.sampled_from(["password", "user", "token", "id", "pass\u00e9"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=20,
)
PATHS = [("password",), ("user", "token"), ("pass\u00e9",)]


def model_remove(value: Any, paths: list[tuple[str, ...]]) -> Any:
    """The sanitizer's rules, recursively over plain Python values."""
    if isinstance(value, list):
        return [model_remove(item, paths) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for name, child in value.items():
        if (name,) in paths:
            continue
        below = [path[1:] for path in paths if len(path) > 1 and path[0] == name]
        out[name] = model_remove(child, below) if below else child
    return out


@given(json_values, st.sampled_from([None, 1]), st.booleans())
def test_sanitizer_agrees_with_a_recursive_model(
    document: Any, indent: int | None, ascii_only: bool
) -> None:
    value = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    write = Write(puts=[(b"k", value)])
    out = SanitizeJson(PATHS).process(write)
    expected = model_remove(document, PATHS)
    assert json.loads(out.puts[0][1]) == expected
    if expected == document:
        assert out is write
