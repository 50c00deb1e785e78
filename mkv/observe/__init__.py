"""Observability: Prometheus metrics, their HTTP endpoint, and logs.

Other packages report to these through observers they are handed; nothing
here reaches into a partition or the registry.
"""
