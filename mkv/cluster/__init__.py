"""Cluster mode: membership, leases, leader keys and placement kept in etcd.

The sans-I/O rules (``keyspace``, ``placement``, ``view``, ``reconcile``) are
apart from the Trio side (``membership``), so the decisions are tested
without etcd. The node (``mkv/node/``) runs this package; nothing here
imports the node (docs/architecture.md, docs/cluster.md).
"""
