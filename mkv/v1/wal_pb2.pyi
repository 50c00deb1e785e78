from mkv.v1 import data_pb2 as _data_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WalWrite(_message.Message):
    __slots__ = ("puts", "deletes")
    PUTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    puts: _containers.RepeatedCompositeFieldContainer[_data_pb2.Entry]
    deletes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, puts: _Optional[_Iterable[_Union[_data_pb2.Entry, _Mapping]]] = ..., deletes: _Optional[_Iterable[bytes]] = ...) -> None: ...
