"""Partition snapshots and restores (docs/snapshots.md).

- ``manifest``: the files a snapshot is made of, and how they are checked;
- ``paths``: the snapshot root, and walking inside it without following symlinks;
- ``stores``: capture and install by store kind, the one place that knows them;
- ``take``: writing one snapshot (copy, checksum, fsync, rename, manifest);
- ``writeback``: keeping a large copy's dirty pages few;
- ``restore``: checking a snapshot while copying it into a new partition.

What the control plane calls, running these as the node's operations, is the
node's ``snapshot_service`` (mkv/node/): this package imports nothing of the
node (docs/architecture.md).
"""
