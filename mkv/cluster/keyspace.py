"""The cluster's keys in etcd and their JSON values, checked when read.

Everything lives under ``/mkv/<cluster>/``::

    nodes/<node-id>      {"schema": 1, "data": "h:p", "control": "h:p",
                          "replication": "h:p", "version": "...", "started": "...",
                          "drained": true (only once drained: no new replicas)}
                         (under the node's lease)
    partitions/<id>      {"schema": 1, "start": hex, "end": hex | null, "store": "sqlite",
                          "pipeline": [...], "replicas": ["n-..."], "isr": ["n-..."],
                          "state": "new" | "active"}
    leaders/<id>         {"schema": 1, "node": "n-..."}  (under the leader's lease;
                          the epoch is this key's create revision)
    placement            {"schema": 1}  (its mod_revision serialises placement changes)

A value read from etcd is input from outside the process: anything that does
not parse, has another schema, or names impossible ranges or ids raises
``BadValue``, which the view logs and does not act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from mkv.router import KeyRange

__all__ = [
    "SCHEMA",
    "BadValue",
    "Keys",
    "LeaderRecord",
    "NodeRecord",
    "PartitionRecord",
    "check_name",
]

SCHEMA = 1
# Node ids, partition ids and cluster names: path- and key-safe, as the
# catalog's partition ids are.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# "new": placed and never led, so empty: its node creates it. "active": it
# has been led, so it has data; a node without a copy must not start it empty.
PARTITION_STATES = ("new", "active")

Kind = Literal["nodes", "partitions", "leaders", "placement"]


class BadValue(ValueError):
    """A key or value in etcd that mkv did not write, or a newer mkv wrote."""


def check_name(name: str, what: str) -> str:
    """Raises:
    ValueError: ``name`` is not 1 to 64 letters, digits, '_', '.' or '-'.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} must be 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


@attrs.frozen
class Keys:
    """The key names of one cluster."""

    cluster: str

    def __attrs_post_init__(self) -> None:
        check_name(self.cluster, "cluster name")

    @property
    def prefix(self) -> bytes:
        return f"/mkv/{self.cluster}/".encode()

    def node(self, node_id: str) -> bytes:
        return self.prefix + b"nodes/" + node_id.encode()

    def partition(self, partition_id: str) -> bytes:
        return self.prefix + b"partitions/" + partition_id.encode()

    def leader(self, partition_id: str) -> bytes:
        return self.prefix + b"leaders/" + partition_id.encode()

    @property
    def placement(self) -> bytes:
        return self.prefix + b"placement"

    def parse(self, key: bytes) -> tuple[Kind, str]:
        """What ``key`` (under this cluster's prefix) names.

        Raises:
            BadValue: a key mkv does not write.
        """
        if not key.startswith(self.prefix):
            raise BadValue(f"key {key!r} is outside {self.prefix!r}")
        rest = key[len(self.prefix) :].decode("utf-8", "replace")
        if rest == "placement":
            return "placement", ""
        kind, _, name = rest.partition("/")
        if kind not in ("nodes", "partitions", "leaders") or not _NAME.fullmatch(name):
            raise BadValue(f"unknown key {key!r}")
        return kind, name  # type: ignore[return-value]  # checked just above


def _load(value: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadValue(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadValue(f"{what}: not a JSON object")
    if data.get("schema") != SCHEMA:
        raise BadValue(f"{what}: schema {data.get('schema')!r}, this mkv reads {SCHEMA}")
    return data


def _text(data: dict[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadValue(f"{what}: {name!r} must be a string, not {value!r}")
    return value


def _hex(value: object, name: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadValue(f"{what}: {name!r} must be hex text, not {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadValue(f"{what}: {name!r} is not hex: {value!r}") from None


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps({"schema": SCHEMA, **data}, sort_keys=True).encode()


@attrs.frozen
class NodeRecord:
    id: str
    data: str
    control: str
    replication: str
    version: str
    started: str
    # Drained (DrainNode): placement and repair put no replica here until
    # the node restarts (a new registration).
    drained: bool = False

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "data": self.data,
            "control": self.control,
            "replication": self.replication,
            "version": self.version,
            "started": self.started,
        }
        if self.drained:
            fields["drained"] = True
        return _dump(fields)

    @classmethod
    def decode(cls, node_id: str, value: bytes) -> NodeRecord:
        what = f"nodes/{node_id}"
        data = _load(value, what)
        drained = data.get("drained", False)
        if not isinstance(drained, bool):
            raise BadValue(f"{what}: 'drained' must be true or false, not {drained!r}")
        return cls(
            node_id,
            _text(data, "data", what),
            _text(data, "control", what),
            _text(data, "replication", what),
            _text(data, "version", what),
            _text(data, "started", what),
            drained,
        )


@attrs.frozen
class PartitionRecord:
    id: str
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]
    # Node ids; the first is the preferred leader.
    replicas: tuple[str, ...]
    state: str = "active"
    # The in-sync set: the replicas that have every acknowledged write durable
    # (only they may be elected). A subset of ``replicas``, kept in their
    # order; by default all of them (a new partition's replicas are all empty,
    # so all in sync; a record written before issue 16 has R = 1).
    isr: tuple[str, ...] = attrs.field()

    @isr.default
    def _all_replicas(self) -> tuple[str, ...]:
        return self.replicas

    @isr.validator
    def _check_isr(self, _: attrs.Attribute[tuple[str, ...]], isr: tuple[str, ...]) -> None:
        if not isr or not set(isr) <= set(self.replicas) or len(set(isr)) != len(isr):
            raise ValueError(
                f"partition {self.id}: isr {list(isr)} must be one or more distinct nodes "
                f"among its replicas {list(self.replicas)}"
            )

    def with_isr(self, isr: Iterable[str]) -> PartitionRecord:
        """This record with the in-sync set ``isr`` (in the replicas' order).

        Raises:
            ValueError: ``isr`` is empty or names a node that holds no replica.
        """
        members = set(isr)
        if not members or not members <= set(self.replicas):
            raise ValueError(
                f"partition {self.id}: isr {sorted(members)} must name one or more of its "
                f"replicas {list(self.replicas)}, and no other node"
            )
        return attrs.evolve(self, isr=tuple(r for r in self.replicas if r in members))

    def encode(self) -> bytes:
        return _dump(
            {
                "start": self.range.start.hex(),
                "end": None if self.range.end is None else self.range.end.hex(),
                "store": self.store,
                "pipeline": list(self.pipeline),
                "replicas": list(self.replicas),
                "isr": list(self.isr),
                "state": self.state,
            }
        )

    @classmethod
    def decode(cls, partition_id: str, value: bytes) -> PartitionRecord:
        what = f"partitions/{partition_id}"
        data = _load(value, what)
        start = _hex(data.get("start"), "start", what)
        end = None if data.get("end") is None else _hex(data.get("end"), "end", what)
        if end is not None and end <= start:
            raise BadValue(f"{what}: its end is not after its start")
        pipeline, replicas = data.get("pipeline"), data.get("replicas")
        if not isinstance(pipeline, list) or not all(isinstance(s, str) for s in pipeline):
            raise BadValue(f"{what}: 'pipeline' must be a list of strings")
        if not isinstance(replicas, list) or not replicas:
            raise BadValue(f"{what}: 'replicas' must be a non-empty list of node ids")
        for replica in replicas:
            if not isinstance(replica, str) or not _NAME.fullmatch(replica):
                raise BadValue(f"{what}: bad node id in 'replicas': {replica!r}")
        if len(set(replicas)) != len(replicas):
            raise BadValue(f"{what}: a node appears twice in 'replicas'")
        state = _text(data, "state", what)
        if state not in PARTITION_STATES:
            raise BadValue(f"{what}: unknown state {state!r}")
        # Absent in a record written before issue 16 (one replica, in sync).
        isr = data.get("isr", replicas)
        if not isinstance(isr, list) or not isr:
            raise BadValue(f"{what}: 'isr' must be a non-empty list of node ids")
        for member in isr:
            if not isinstance(member, str) or member not in replicas:
                raise BadValue(f"{what}: 'isr' names {member!r}, which holds no replica")
        if len(set(isr)) != len(isr):
            raise BadValue(f"{what}: a node appears twice in 'isr'")
        return cls(
            partition_id,
            KeyRange(start, end),
            _text(data, "store", what),
            tuple(pipeline),
            tuple(replicas),
            state,
            tuple(r for r in replicas if r in isr),
        )


@attrs.frozen
class LeaderRecord:
    node: str

    def encode(self) -> bytes:
        return _dump({"node": self.node})

    @classmethod
    def decode(cls, partition_id: str, value: bytes) -> LeaderRecord:
        what = f"leaders/{partition_id}"
        node = _text(_load(value, what), "node", what)
        if not _NAME.fullmatch(node):
            raise BadValue(f"{what}: bad node id {node!r}")
        return cls(node)


PLACEMENT_VALUE = _dump({})
