from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartitionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_STATE_UNSPECIFIED: _ClassVar[PartitionState]
    STARTING: _ClassVar[PartitionState]
    ACTIVE: _ClassVar[PartitionState]
    DRAINING: _ClassVar[PartitionState]
    STOPPED: _ClassVar[PartitionState]
PARTITION_STATE_UNSPECIFIED: PartitionState
STARTING: PartitionState
ACTIVE: PartitionState
DRAINING: PartitionState
STOPPED: PartitionState

class PartitionInfo(_message.Message):
    __slots__ = ("id", "start", "end", "store", "state", "key_count", "size_bytes", "last_seq", "pipeline")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    store: str
    state: PartitionState
    key_count: int
    size_bytes: int
    last_seq: int
    pipeline: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store: _Optional[str] = ..., state: _Optional[_Union[PartitionState, str]] = ..., key_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., last_seq: _Optional[int] = ..., pipeline: _Optional[_Iterable[str]] = ...) -> None: ...

class AddPartitionRequest(_message.Message):
    __slots__ = ("id", "start", "end", "store", "pipeline")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    store: str
    pipeline: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store: _Optional[str] = ..., pipeline: _Optional[_Iterable[str]] = ...) -> None: ...

class AddPartitionResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: PartitionInfo
    def __init__(self, partition: _Optional[_Union[PartitionInfo, _Mapping]] = ...) -> None: ...

class RemovePartitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RemovePartitionResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: PartitionInfo
    def __init__(self, partition: _Optional[_Union[PartitionInfo, _Mapping]] = ...) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ...) -> None: ...
