"""Serving gRPC over purerpc: the transport, knowing no mkv service.

Method dispatch, request bodies, purerpc workarounds, health, reflection,
authentication, TLS and rate limits. Nothing here imports the node.
"""
