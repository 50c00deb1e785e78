# Development tasks. `just` alone runs the tests and the linters.
# Tools come from the project's virtualenv: create it with `just setup`
# (or the README's commands), which also installs `just` itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := ".venv/bin"

default: test lint

# Create .venv and install mkv with its development tools.
setup:
    test -x {{bin}}/python || python3 -m venv .venv
    {{bin}}/pip install -e '.[dev]'

# Run a node on the embedded default (SQLite in ./mkv-data, one partition owning every key).
serve *ARGS:
    {{bin}}/mkv serve {{ARGS}}

# The whole test suite, as CI runs it (long soak runs excluded: see `soak`).
test *ARGS:
    {{bin}}/pytest {{ARGS}}

# Long-running stress and soak tests (marked `slow`), excluded from `test` and CI;
# one at a time (-n 0), as the distributions they print would suffer from a neighbour.
soak *ARGS:
    {{bin}}/pytest -n 0 -m slow {{ARGS}}

# The failover soaks alone (issue 16), each printing its distribution: with
# one replica, 20 rounds of kill -9 and pause past the lease, 20 network cuts;
# with three, 20 kills of a leader and 20 network cuts of one; etcd down 10 s
# with one and with three.
soak-failover *ARGS:
    {{bin}}/pytest -n 0 -m slow -s tests/test_failover.py tests/test_replica_failover.py {{ARGS}}

lint:
    {{bin}}/ruff format --check mkv tests tools examples
    {{bin}}/ruff check mkv tests tools examples
    {{bin}}/mypy

# Reformat and apply ruff's safe fixes.
fix:
    {{bin}}/ruff format mkv tests tools examples
    {{bin}}/ruff check --fix mkv tests tools examples

# Regenerate mkv/v1 from protos/ (tests fail while it is stale).
protos:
    {{bin}}/python tools/gen_protos.py

# The benchmark suite against baselines measured in the same run.
bench *ARGS:
    {{bin}}/python tools/bench.py {{ARGS}}

# A CI-sized benchmark run.
bench-quick *ARGS:
    {{bin}}/python tools/bench.py --quick {{ARGS}}

# Point-read latency of the caching store: cache hit against SQLite read.
bench-cache *ARGS:
    {{bin}}/python tools/bench_cache.py {{ARGS}}
# Snapshot throughput against the bare sqlite3 backup API, and upsert p99 during one (1 GiB).
bench-snapshot *ARGS:
    {{bin}}/python tools/bench_snapshot.py {{ARGS}}

# Split of a 1M-key partition under writers: time to cut-over, writers' p99 during / before.
bench-split *ARGS:
    {{bin}}/python tools/bench_split.py {{ARGS}}

# A partition moved to another node under writers: 1M keys (--quick: 100k).
bench-move *ARGS:
    {{bin}}/python tools/bench_move.py {{ARGS}}

# Restore time of a snapshot of 1M keys, into each store kind.
bench-restore *ARGS:
    {{bin}}/python tools/bench_restore.py {{ARGS}}

# Merge of a 1M-key right partition under writers: time, the cut-over's pause, writers' p99 during / before.
bench-merge *ARGS:
    {{bin}}/python tools/bench_merge.py {{ARGS}}

# Cluster mode's cost: server CPU per Get and Upsert against single-node mode (its own etcd).
bench-cluster *ARGS:
    {{bin}}/python tools/bench_cluster.py {{ARGS}}

# Replication's cost: R=3 (sync) against R=1 single-key upserts and 1 MiB batches, as ratios; follower CPU per write.
bench-replicas *ARGS:
    {{bin}}/python tools/bench_replicas.py {{ARGS}}

# Two source trees side by side in alternating 1 s slices (A/B): `just bench-ab /tmp/before . --op get`.
bench-ab *ARGS:
    {{bin}}/python tools/bench_ab.py {{ARGS}}
