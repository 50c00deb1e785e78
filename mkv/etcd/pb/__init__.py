"""Generated protobuf messages for mkv's subset of etcd's v3 API (tools/gen_protos.py)."""
