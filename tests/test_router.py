"""The router is pure code: checked against a brute-force model with Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mkv.errors import AlreadyExistsError, InvalidArgumentError
from mkv.router import KeyRange, Router

keys = st.binary(min_size=1, max_size=4)


@st.composite
def disjoint_ranges(draw: st.DrawFn) -> list[tuple[KeyRange, str]]:
    """Sorted distinct cut points → adjacent ranges, some of them dropped (gaps)."""
    cuts = sorted(set(draw(st.lists(st.binary(max_size=3), max_size=8))))
    ends: list[bytes | None] = [*cuts[1:], None] if cuts else []
    bounds = list(zip(cuts, ends, strict=True))
    keep = draw(st.lists(st.booleans(), min_size=len(bounds), max_size=len(bounds)))
    return [
        (KeyRange(start, end), f"p{i}")
        for i, ((start, end), kept) in enumerate(zip(bounds, keep, strict=True))
        if kept
    ]


@given(disjoint_ranges(), keys)
def test_lookup_agrees_with_brute_force(ranges: list[tuple[KeyRange, str]], key: bytes) -> None:
    router = Router.build(ranges, version=1)
    owners = [pid for rng, pid in ranges if key in rng]
    assert router.lookup(key) == (owners[0] if owners else None)


@given(disjoint_ranges(), keys, keys)
def test_lookup_span_is_one_owner_or_refused(
    ranges: list[tuple[KeyRange, str]], a: bytes, b: bytes
) -> None:
    low, high = min(a, b), max(a, b)
    router = Router.build(ranges, version=1)
    touched = {pid for rng, pid in ranges if rng.overlaps(KeyRange(low, high + b"\0"))}
    whole = [pid for rng, pid in ranges if low in rng and high in rng]
    if whole:
        assert router.lookup_span(low, high) == whole[0]
    elif not touched:
        assert router.lookup_span(low, high) is None
    else:
        with pytest.raises(InvalidArgumentError):
            router.lookup_span(low, high)


def test_overlapping_ranges_are_refused() -> None:
    with pytest.raises(AlreadyExistsError, match="overlaps"):
        Router.build([(KeyRange(b"a", b"m"), "x"), (KeyRange(b"l", None), "y")], version=1)


def test_adjacent_ranges_do_not_overlap() -> None:
    left, right = KeyRange(b"a", b"m"), KeyRange(b"m", None)
    assert not left.overlaps(right)
    router = Router.build([(left, "left"), (right, "right")], version=1)
    assert router.lookup(b"l\xff") == "left"
    assert router.lookup(b"m") == "right"
    assert router.lookup(b"\x00") is None


@pytest.mark.parametrize(("start", "end"), [(b"b", b"a"), (b"a", b"a")])
def test_empty_or_backwards_range_is_invalid(start: bytes, end: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="greater than start"):
        KeyRange.from_wire(start, end)


def test_empty_end_on_the_wire_means_unbounded() -> None:
    assert KeyRange.from_wire(b"k", b"") == KeyRange(b"k", None)
    assert b"\xff" * 100 in KeyRange(b"k", None)
