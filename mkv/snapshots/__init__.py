"""Partition snapshots: the files a snapshot is made of, and how they are checked."""
