"""The sans-I/O counting behind the connection guard: frame boundaries in raw
bytes however they are split, which frames count as doing no work, and the
request-memory accounting."""

from __future__ import annotations

import pytest

from mkv.node.config import Config, ConfigError
from mkv.rpc.connection_limits import (
    CLIENT_PREFACE,
    ConnectionBuffers,
    Frame,
    FrameScanner,
    FrameType,
    RequestMemory,
)
from tests.test_h2_abuse import DATA, END_STREAM, HEADERS, PING, RST_STREAM, SETTINGS, frame

MIB = 1024 * 1024


def connection_bytes() -> bytes:
    return (
        CLIENT_PREFACE
        + frame(SETTINGS, 0, 0)
        + frame(HEADERS, 0x4, 1, b"h" * 30)
        + frame(DATA, 0, 1, b"d" * 20_000)
        + frame(DATA, END_STREAM, 1)
        + frame(PING, 0, 0, b"12345678")
        + frame(0xFA, 0, 0, b"?")
        + frame(RST_STREAM, 0, 3, b"\0\0\0\x08")
    )


EXPECTED = [
    Frame(FrameType.SETTINGS, 0, 0, 0),
    Frame(FrameType.HEADERS, 0x4, 1, 30),
    Frame(FrameType.DATA, 0, 1, 20_000),
    Frame(FrameType.DATA, END_STREAM, 1, 0),
    Frame(FrameType.PING, 0, 0, 8),
    Frame(0xFA, 0, 0, 1),
    Frame(FrameType.RST_STREAM, 0, 3, 4),
]


@pytest.mark.parametrize("piece", [1, 2, 9, 10, 17, 4096, 1 << 20])
def test_the_scanner_finds_every_frame_however_the_bytes_are_split(piece: int) -> None:
    data = connection_bytes()
    scanner = FrameScanner()
    frames: list[Frame] = []
    for start in range(0, len(data), piece):
        chunk = data[start : start + piece]
        taken, found = scanner.take(chunk, 1000)
        assert taken == len(chunk)
        frames += found
    assert frames == EXPECTED


def test_the_scanner_hands_on_at_most_max_frames_and_the_rest_later() -> None:
    data = connection_bytes()
    scanner = FrameScanner()
    frames: list[Frame] = []
    handed = 0
    while handed < len(data):
        taken, found = scanner.take(data[handed:], 2)
        assert len(found) <= 2
        assert taken > 0
        handed += taken
        frames += found
    assert frames == EXPECTED


def test_frames_that_do_no_work() -> None:
    idle = [frame for frame in EXPECTED if frame.idle]
    assert [f.type for f in idle] == [FrameType.SETTINGS, FrameType.PING, 0xFA]
    assert Frame(FrameType.DATA, 0, 1, 0).idle  # empty, and not the end
    assert not Frame(FrameType.DATA, END_STREAM, 1, 0).idle
    assert Frame(FrameType.CONTINUATION, 0, 1, 0).idle
    assert not Frame(FrameType.WINDOW_UPDATE, 0, 0, 4).idle
    assert Frame(FrameType.PRIORITY, 0, 1, 5).idle


def test_request_bytes_are_counted_per_stream_connection_and_node() -> None:
    node = RequestMemory(10 * MIB)
    one, two = ConnectionBuffers(node), ConnectionBuffers(node)
    one.received(1, 3 * MIB)
    one.received(3, 2 * MIB)
    two.received(1, 4 * MIB)
    assert (one.total, two.total, node.used) == (5 * MIB, 4 * MIB, 9 * MIB)
    assert node.has_room(MIB)
    assert not node.has_room(MIB + 1)
    two.received(1, 2 * MIB)
    assert node.over
    assert one.consumed(1, MIB)
    assert one.release(1) == 2 * MIB  # what its call never read
    assert not one.consumed(1, 10)  # released: given back already
    assert one.release(1) is None
    two.release(1)
    assert node.used == 2 * MIB
    assert node.peak == 11 * MIB


def test_trimming_is_asked_for_once_much_was_freed() -> None:
    node = RequestMemory(1024 * MIB)
    node.add(8 * MIB)
    node.add(-8 * MIB)
    assert not node.should_trim()  # too little to be worth it
    node.add(100 * MIB)
    node.add(-50 * MIB)
    assert not node.should_trim()  # half of it still held
    node.add(-30 * MIB)
    assert node.should_trim()
    assert not node.should_trim()  # once
    node.add(-20 * MIB)
    assert node.should_trim()  # the 20 MiB since


@pytest.mark.parametrize(
    "settings",
    [
        {"connection_buffer_bytes": MIB},  # below 2 x max_request_bytes
        {"request_buffer_bytes": MIB},
        {"max_request_bytes": 8 * MIB},
        {"idle_frame_rate": 0},
        {"reset_burst": 0},
        {"frames_per_turn": 0},
        {"connection_output_bytes": 1024},
    ],
)
def test_config_refuses_limits_that_cannot_work(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        Config.load(None, **settings)
