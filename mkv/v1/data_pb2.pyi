from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Status]
    BAD_NODE: _ClassVar[Status]
OK: Status
BAD_NODE: Status

class Entry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class PartitionRange(_message.Message):
    __slots__ = ("id", "start", "end", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    address: str
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., address: _Optional[str] = ...) -> None: ...

class RoutingHint(_message.Message):
    __slots__ = ("message", "owned", "map_version")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    message: str
    owned: _containers.RepeatedCompositeFieldContainer[PartitionRange]
    map_version: int
    def __init__(self, message: _Optional[str] = ..., owned: _Optional[_Iterable[_Union[PartitionRange, _Mapping]]] = ..., map_version: _Optional[int] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("entries", "map_version")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    map_version: int
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., map_version: _Optional[int] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("status", "seq", "partition_id", "hint", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: Status
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("status", "found", "value", "seq", "partition_id", "hint", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: Status
    found: bool
    value: bytes
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., found: _Optional[bool] = ..., value: _Optional[bytes] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("keys", "map_version")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    map_version: int
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., map_version: _Optional[int] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("status", "removed", "seq", "partition_id", "hint", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: Status
    removed: int
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., removed: _Optional[int] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class PartitionMapRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartitionMapResponse(_message.Message):
    __slots__ = ("version", "partitions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    version: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionRange]
    def __init__(self, version: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionRange, _Mapping]]] = ...) -> None: ...
