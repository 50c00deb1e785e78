"""gRPC server reflection (``grpc.reflection.v1`` and ``v1alpha``).

Lets grpcurl-style tools list a port's services and fetch their schemas
without the ``.proto`` files. Answers come from the descriptors of the
modules generated from protos/ (each ``FileDescriptorProto`` serialized, its
imports with it), and only for files the port's services are built from.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import ModuleType
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from purerpc.grpclib.status import StatusCode

from mkv.rpc.server import AnyHandler, BidiStream
from mkv.std import reflection_v1_pb2, reflection_v1alpha_pb2

__all__ = ["REFLECTION_VERSIONS", "ReflectionService"]

# Both versions share one message layout; v1alpha is what older tools ask.
REFLECTION_VERSIONS: dict[str, ModuleType] = {
    module.DESCRIPTOR.services_by_name["ServerReflection"].full_name: module
    for module in (reflection_v1_pb2, reflection_v1alpha_pb2)
}


class ReflectionService:
    """One version of the reflection service for a port's services.

    Args:
        version: the reflection service's full name (a key of ``REFLECTION_VERSIONS``).
        services: the full names of the services on the port, this one included.
    """

    def __init__(self, version: str, services: Iterable[str]) -> None:
        self._pb: Any = REFLECTION_VERSIONS[version]
        self._services = sorted(services)
        pool = descriptor_pool.Default()
        self._files: dict[str, FileDescriptor] = {}
        for name in self._services:
            self._add_with_imports(pool.FindServiceByName(name).file)

    def _add_with_imports(self, file: FileDescriptor) -> None:
        if file.name not in self._files:
            self._files[file.name] = file
            for dependency in file.dependencies:
                self._add_with_imports(dependency)

    def methods(self) -> dict[str, tuple[type[Message], AnyHandler]]:
        return {
            "ServerReflectionInfo": (
                self._pb.ServerReflectionRequest,
                BidiStream(self.server_reflection_info),
            )
        }

    async def server_reflection_info(
        self, requests: AsyncIterator[Any]
    ) -> AsyncGenerator[Message, None]:
        """One answer per request, in order, until the client ends its side."""
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: Any) -> Message:
        """The response to one reflection request (errors in the response, as
        the protocol has them, never as a call status)."""
        pb = self._pb
        response = pb.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            response.list_services_response.service.extend(
                pb.ServiceResponse(name=name) for name in self._services
            )
        elif kind == "file_by_filename":
            self._answer_file(response, self._files.get(request.file_by_filename))
        elif kind == "file_containing_symbol":
            self._answer_file(response, self._file_of_symbol(request.file_containing_symbol))
        elif kind == "all_extension_numbers_of_type":
            # mkv's messages declare no extension ranges.
            if self._file_of_symbol(request.all_extension_numbers_of_type) is None:
                self._answer_error(response, StatusCode.NOT_FOUND, "No such message type.")
            else:
                response.all_extension_numbers_response.base_type_name = (
                    request.all_extension_numbers_of_type
                )
        elif kind == "file_containing_extension":
            self._answer_error(response, StatusCode.NOT_FOUND, "This server defines no extensions.")
        else:
            self._answer_error(
                response, StatusCode.INVALID_ARGUMENT, "The reflection request asks nothing."
            )
        answer: Message = response
        return answer

    def _file_of_symbol(self, symbol: str) -> FileDescriptor | None:
        try:
            file = descriptor_pool.Default().FindFileContainingSymbol(symbol)
        except KeyError:
            return None
        return file if file.name in self._files else None

    def _answer_file(self, response: Any, file: FileDescriptor | None) -> None:
        if file is None:
            self._answer_error(response, StatusCode.NOT_FOUND, "No such file or symbol.")
            return
        # The file first, then every file it imports, so the client can build it.
        ordered: list[FileDescriptor] = []
        self._with_imports(file, ordered)
        response.file_descriptor_response.file_descriptor_proto.extend(
            f.serialized_pb for f in ordered
        )

    def _with_imports(self, file: FileDescriptor, ordered: list[FileDescriptor]) -> None:
        if file not in ordered:
            ordered.append(file)
            for dependency in file.dependencies:
                self._with_imports(dependency, ordered)

    def _answer_error(self, response: Any, code: StatusCode, message: str) -> None:
        response.error_response.error_code = code.value
        response.error_response.error_message = message
