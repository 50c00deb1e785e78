"""Point-read latency of the caching store: cache hit against SQLite point read.

In-process, one thread, no server: what a partition's ``get`` costs on the
event loop. Workloads, each timing every call on its own:

- ``hit``: keys already cached;
- ``hit-absent``: absent keys whose absence is cached (negative entries);
- ``miss``: each key's first read with a cold cache (SQLite read + fill);
- ``sqlite``: the bare ``SqliteStore.get`` the misses make (the baseline);
- ``dict``: ``dict.get`` on the same keys (the floor of any Python cache);
- ``zipf``: a Zipf-distributed stream (s=1.1) over all keys with the cache
  bounded to a tenth of the data: hit ratio and mean latency.

It also reports how the cache's charged size (keys + values + 320 bytes per
entry) compares with the memory ``tracemalloc`` sees it use.

The durable file is fresh in the OS page cache, so ``sqlite`` is a local SSD
(or RAM) read; on a network "managed disk" a miss costs more, a hit the same.

    python tools/bench_cache.py [--keys 100000] [--value-bytes 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mkv.records import Write
from mkv.store import CachingStore, Item, SqliteStore
from mkv.store.lru import entry_size

BATCH = 5000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--reads", type=int, default=50_000, help="timed reads per workload")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: only checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.keys, args.reads = 2000, 1000
    with tempfile.TemporaryDirectory(prefix="mkv-bench-cache-") as tmp:
        results = run(Path(tmp), args.keys, args.value_bytes, args.reads)
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results}, indent=2) + "\n")
    return 0


def run(tmp: Path, n_keys: int, value_bytes: int, n_reads: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    keys = [b"user:%012d" % i for i in range(n_keys)]
    value = rng.randbytes(value_bytes)
    data_bytes = sum(entry_size(k, Item(value, 1)) for k in keys)
    durable = SqliteStore(tmp / "durable.sqlite3")
    # Big enough for everything: hit and miss runs never evict.
    store = CachingStore(durable, data_bytes * 2)
    for seq, start in enumerate(range(0, n_keys, BATCH), 1):
        store.apply([Write(seq=seq, puts=[(k, value) for k in keys[start : start + BATCH]])])
    results: list[dict[str, Any]] = []
    sample = [rng.choice(keys) for _ in range(n_reads)]

    clear(store)
    cold = rng.sample(keys, min(n_reads, n_keys))
    results.append(measure("miss", store.get, cold))
    results.append(measure("hit", store.get, [rng.choice(cold) for _ in range(n_reads)]))
    absent = [b"absent:%d" % i for i in range(1000)]
    for key in absent:
        store.get(key)
    results.append(measure("hit-absent", store.get, [rng.choice(absent) for _ in range(n_reads)]))
    results.append(measure("sqlite", durable.get, sample))
    as_dict = {k: Item(value, 1) for k in keys}
    results.append(measure("dict", as_dict.get, sample))

    # A tenth of the data fits; reads follow a Zipf law over all keys.
    zipf_store = CachingStore(durable, data_bytes // 10)
    stream = zipf_keys(keys, 1.1, n_reads * 2, rng)
    for key in stream[:n_reads]:  # warm up
        zipf_store.get(key)
    before = zipf_store.statistics()
    zipf = measure("zipf", zipf_store.get, stream[n_reads:])
    after = zipf_store.statistics()
    zipf["hit_ratio"] = round((after.hits - before.hits) / n_reads, 3)
    results.append(zipf)
    results.append(memory_check(durable, keys, value, data_bytes // 4))
    store.close()
    return results


def clear(store: CachingStore) -> None:
    """Empty the cache, as after a restart."""
    store._cache.clear()


def measure(name: str, read: Callable[[bytes], Any], keys: Sequence[bytes]) -> dict[str, Any]:
    clock = time.perf_counter_ns
    times = []
    gc.disable()  # a collection pause is not the cache's cost
    try:
        for key in keys:
            start = clock()
            read(key)
            times.append(clock() - start)
    finally:
        gc.enable()
    times.sort()
    return {
        "name": name,
        "reads": len(times),
        "latency_us": {
            "mean": round(statistics.fmean(times) / 1000, 2),
            "p50": round(times[len(times) // 2] / 1000, 2),
            "p99": round(times[int(len(times) * 0.99)] / 1000, 2),
            "p999": round(times[int(len(times) * 0.999)] / 1000, 2),
        },
    }


def zipf_keys(keys: Sequence[bytes], s: float, n: int, rng: random.Random) -> list[bytes]:
    weights = list(itertools.accumulate(1 / (rank**s) for rank in range(1, len(keys) + 1)))
    shuffled = list(keys)
    rng.shuffle(shuffled)  # the popular keys are spread over the key space
    total = weights[-1]
    return [shuffled[bisect.bisect_left(weights, rng.random() * total)] for _ in range(n)]


def memory_check(
    durable: SqliteStore, keys: Sequence[bytes], value: bytes, bound: int
) -> dict[str, Any]:
    """Fill a cache of ``bound`` bytes from SQLite; compare charged with traced memory."""
    store = CachingStore(durable, bound)
    store.get(keys[0])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            store.get(key)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = store.statistics()
    return {
        "name": "memory",
        "entries": stats.entries,
        "charged_bytes": stats.bytes,
        "traced_bytes": used,
        "traced_per_charged": round(used / stats.bytes, 3),
    }


def report(results: list[dict[str, Any]]) -> None:
    print(
        f"{'workload':<12} {'reads':>7} {'mean µs':>8} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9}"
    )
    for r in results:
        if "latency_us" in r:
            lat = r["latency_us"]
            line = (
                f"{r['name']:<12} {r['reads']:>7} {lat['mean']:>8} {lat['p50']:>8}"
                f" {lat['p99']:>8} {lat['p999']:>9}"
            )
            if "hit_ratio" in r:
                line += f"   hit ratio {r['hit_ratio']:.1%}"
            print(line)
    for r in results:
        if r["name"] == "memory":
            print(
                f"memory: {r['entries']} entries charged {r['charged_bytes']} bytes, "
                f"tracemalloc saw {r['traced_bytes']} ({r['traced_per_charged']:.2f}x)"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
