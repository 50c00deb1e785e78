from mkv.v1 import data_pb2 as _data_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FetchRequest(_message.Message):
    __slots__ = ("partition_id", "epoch", "after_seq", "snapshot", "durable_seq", "max_bytes", "follower", "last_epoch", "replica")
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    partition_id: str
    epoch: int
    after_seq: int
    snapshot: bool
    durable_seq: int
    max_bytes: int
    follower: str
    last_epoch: int
    replica: bool
    def __init__(self, partition_id: _Optional[str] = ..., epoch: _Optional[int] = ..., after_seq: _Optional[int] = ..., snapshot: _Optional[bool] = ..., durable_seq: _Optional[int] = ..., max_bytes: _Optional[int] = ..., follower: _Optional[str] = ..., last_epoch: _Optional[int] = ..., replica: _Optional[bool] = ...) -> None: ...

class SnapshotBegin(_message.Message):
    __slots__ = ("seq", "timestamp", "start", "end")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    seq: int
    timestamp: int
    start: bytes
    end: bytes
    def __init__(self, seq: _Optional[int] = ..., timestamp: _Optional[int] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("key", "value", "seq", "timestamp")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    seq: int
    timestamp: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class SnapshotRows(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    def __init__(self, rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("sha256", "rows", "seq", "timestamp")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    rows: int
    seq: int
    timestamp: int
    def __init__(self, sha256: _Optional[bytes] = ..., rows: _Optional[int] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("seq", "timestamp", "puts", "deletes", "epoch")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PUTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    timestamp: int
    puts: _containers.RepeatedCompositeFieldContainer[_data_pb2.Entry]
    deletes: _containers.RepeatedScalarFieldContainer[bytes]
    epoch: int
    def __init__(self, seq: _Optional[int] = ..., timestamp: _Optional[int] = ..., puts: _Optional[_Iterable[_Union[_data_pb2.Entry, _Mapping]]] = ..., deletes: _Optional[_Iterable[bytes]] = ..., epoch: _Optional[int] = ...) -> None: ...

class Records(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class SnapshotRequired(_message.Message):
    __slots__ = ("retained_after",)
    RETAINED_AFTER_FIELD_NUMBER: _ClassVar[int]
    retained_after: int
    def __init__(self, retained_after: _Optional[int] = ...) -> None: ...

class Truncate(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("epoch", "commit_seq", "snapshot_begin", "snapshot_rows", "snapshot_end", "records", "snapshot_required", "truncate")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_BEGIN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ROWS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    commit_seq: int
    snapshot_begin: SnapshotBegin
    snapshot_rows: SnapshotRows
    snapshot_end: SnapshotEnd
    records: Records
    snapshot_required: SnapshotRequired
    truncate: Truncate
    def __init__(self, epoch: _Optional[int] = ..., commit_seq: _Optional[int] = ..., snapshot_begin: _Optional[_Union[SnapshotBegin, _Mapping]] = ..., snapshot_rows: _Optional[_Union[SnapshotRows, _Mapping]] = ..., snapshot_end: _Optional[_Union[SnapshotEnd, _Mapping]] = ..., records: _Optional[_Union[Records, _Mapping]] = ..., snapshot_required: _Optional[_Union[SnapshotRequired, _Mapping]] = ..., truncate: _Optional[_Union[Truncate, _Mapping]] = ...) -> None: ...

class HandoverRequest(_message.Message):
    __slots__ = ("partition_id", "epoch", "step", "successor")
    class Step(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STEP_UNSPECIFIED: _ClassVar[HandoverRequest.Step]
        FENCE: _ClassVar[HandoverRequest.Step]
        ABANDON: _ClassVar[HandoverRequest.Step]
        COMMITTED: _ClassVar[HandoverRequest.Step]
    STEP_UNSPECIFIED: HandoverRequest.Step
    FENCE: HandoverRequest.Step
    ABANDON: HandoverRequest.Step
    COMMITTED: HandoverRequest.Step
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SUCCESSOR_FIELD_NUMBER: _ClassVar[int]
    partition_id: str
    epoch: int
    step: HandoverRequest.Step
    successor: str
    def __init__(self, partition_id: _Optional[str] = ..., epoch: _Optional[int] = ..., step: _Optional[_Union[HandoverRequest.Step, str]] = ..., successor: _Optional[str] = ...) -> None: ...

class HandoverResponse(_message.Message):
    __slots__ = ("final_seq",)
    FINAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    final_seq: int
    def __init__(self, final_seq: _Optional[int] = ...) -> None: ...
