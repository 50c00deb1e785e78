"""Echo servers: the transport ceilings that tools/bench.py compares mkv's calls with.

Both answer ``mkvbench.Echo/Get`` with a GetResponse as big as mkv's answer to
a Get of a preloaded key (a 100-byte value, a sequence number, the partition
id), and do no other work:

- ``purerpc``: purerpc's own ``Service``/``Server``, the stack's plain ceiling;
- ``rpc``: mkv's ``RpcServer`` (mkv.rpc.server: its own listener and accept loop over
  purerpc's connection code), so that what mkv costs on top of it is routing,
  the partition task and the store, not gRPC.

Prints ``echo: listening on 127.0.0.1:PORT`` once ready; runs until killed.
purerpc's server binds every interface with SO_REUSEPORT (see the design
notes); port 0 still gives a port of its own, and clients use loopback.
"""

from __future__ import annotations

import random
import sys

import purerpc
import trio

from mkv.rpc.server import RpcServer
from mkv.v1 import data_pb2 as pb
from mkv.wire import parse_address

ECHO_SERVICE = "mkvbench.Echo"
VALUE = random.Random(0).randbytes(100)


async def get(request: pb.GetRequest) -> pb.GetResponse:
    return pb.GetResponse(status=pb.OK, found=True, value=VALUE, seq=1, partition_id="default")


async def serve_purerpc() -> None:
    service = purerpc.Service(ECHO_SERVICE)
    service.add_method(
        "Get",
        get,
        purerpc.RPCSignature(purerpc.Cardinality.UNARY_UNARY, pb.GetRequest, pb.GetResponse),
    )
    server = purerpc.Server(port=0)
    server.add_service(service)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve_async)
        print(f"echo: listening on 127.0.0.1:{port}", flush=True)


async def serve_rpc() -> None:
    server = RpcServer(ECHO_SERVICE, {"Get": (pb.GetRequest, get)}, parse_address("127.0.0.1:0"))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.run)
        print(f"echo: listening on {address}", flush=True)


if __name__ == "__main__":
    trio.run(serve_rpc if sys.argv[1:] == ["rpc"] else serve_purerpc)
