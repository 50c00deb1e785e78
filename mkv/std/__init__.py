"""Generated message modules of the standard gRPC protos mkv serves (health,
reflection); written by tools/gen_protos.py from protos/grpc_*, never by hand."""
