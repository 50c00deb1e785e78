"""The node: the process that serves partitions over gRPC.

The node itself (server), its data and control plane services, the partition
registry and its catalog, settings, Watch, the snapshot service, and the
statistics it hands its metrics.
"""
