"""Partition snapshots and restores (docs/snapshots.md).

- ``manifest``: the files a snapshot is made of, and how they are checked;
- ``paths``: the snapshot root, and walking inside it without following symlinks;
- ``stores``: capture and install by store kind, the one place that knows them;
- ``take``: writing one snapshot (copy, checksum, fsync, rename, manifest);
- ``writeback``: keeping a large copy's dirty pages few;
- ``restore``: checking a snapshot while copying it into a new partition;
- ``service``: what the control plane calls.
"""
