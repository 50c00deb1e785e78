"""The standard gRPC health service (``grpc.health.v1.Health``).

Load balancers and orchestrators ask it whether to send traffic: the service
"" is the node as a whole, and each plane has its own status. Every status
is NOT_SERVING until the node serves, and again from the moment it begins to
drain, so that a balancer stops sending before the ports close.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable

import trio
from google.protobuf.message import Message

from mkv.errors import NotFoundError
from mkv.rpc.server import AnyHandler, ServerStream
from mkv.std import health_v1_pb2 as pb

__all__ = ["HEALTH_SERVICE", "HealthService"]

HEALTH_SERVICE: str = pb.DESCRIPTOR.services_by_name["Health"].full_name

_Status = pb.HealthCheckResponse.ServingStatus


class HealthService:
    """Per-service serving status, shared by every port of a node.

    Args:
        services: the full names of the services reported on besides "".
    """

    def __init__(self, services: Iterable[str]) -> None:
        self._statuses: dict[str, _Status] = dict.fromkeys(
            ["", *services], pb.HealthCheckResponse.NOT_SERVING
        )
        self._changed = trio.Event()

    def methods(self) -> dict[str, tuple[type[Message], AnyHandler]]:
        return {
            "Check": (pb.HealthCheckRequest, self.check),
            "List": (pb.HealthListRequest, self.list),
            "Watch": (pb.HealthCheckRequest, ServerStream(self.watch)),
        }

    def set_serving(self, serving: bool) -> None:
        """Report every service SERVING or NOT_SERVING; watchers hear of it."""
        status = pb.HealthCheckResponse.SERVING if serving else pb.HealthCheckResponse.NOT_SERVING
        for name in self._statuses:
            self._statuses[name] = status
        self._changed.set()
        self._changed = trio.Event()

    def status(self, service: str) -> _Status:
        return self._statuses.get(service, pb.HealthCheckResponse.SERVICE_UNKNOWN)

    async def check(self, request: pb.HealthCheckRequest) -> pb.HealthCheckResponse:
        """The service's status.

        Raises:
            NotFoundError: no such service (as the health protocol asks).
        """
        if request.service not in self._statuses:
            raise NotFoundError(f"This server reports no health for service {request.service!r}.")
        return pb.HealthCheckResponse(status=self._statuses[request.service])

    async def list(self, request: pb.HealthListRequest) -> pb.HealthListResponse:
        return pb.HealthListResponse(
            statuses={
                name: pb.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )

    async def watch(
        self, request: pb.HealthCheckRequest
    ) -> AsyncGenerator[pb.HealthCheckResponse, None]:
        """The status now, then each change (an unknown service is reported
        SERVICE_UNKNOWN, not refused, as the protocol asks)."""
        sent = None
        while True:
            changed = self._changed
            status = self.status(request.service)
            if status != sent:
                yield pb.HealthCheckResponse(status=status)
                sent = status
            await changed.wait()
