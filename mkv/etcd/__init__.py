"""mkv's client of etcd's v3 API, on purerpc and Trio (docs/etcd.md).

The cluster keeps its membership, placement and leaders in etcd; this is how
a node talks to it. Every call and every stream has a deadline, and silence
past it raises ``EtcdUnavailable``.
"""

from mkv.etcd.client import (
    Compare,
    Etcd,
    Event,
    KeyValue,
    Lease,
    LeaseKeeper,
    Op,
    TxnResult,
    WatchBatch,
    WatchStream,
    open_etcd,
    prefix_end,
)
from mkv.etcd.errors import EtcdCompacted, EtcdError, EtcdUnavailable, LeaseNotFound
from mkv.etcd.lease import LeaseClock, keep_lease

__all__ = [
    "Compare",
    "Etcd",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "Event",
    "KeyValue",
    "Lease",
    "LeaseClock",
    "LeaseKeeper",
    "LeaseNotFound",
    "Op",
    "TxnResult",
    "WatchBatch",
    "WatchStream",
    "keep_lease",
    "open_etcd",
    "prefix_end",
]
