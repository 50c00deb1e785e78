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
    CONDITION_FAILED: _ClassVar[Status]
OK: Status
BAD_NODE: Status
CONDITION_FAILED: Status

class Condition(_message.Message):
    __slots__ = ("key", "seq", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    seq: int
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., seq: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class ConditionFailure(_message.Message):
    __slots__ = ("key", "found", "seq")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    found: bool
    seq: int
    def __init__(self, key: _Optional[bytes] = ..., found: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("message", "owned", "map_version", "owner")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    message: str
    owned: _containers.RepeatedCompositeFieldContainer[PartitionRange]
    map_version: int
    owner: PartitionRange
    def __init__(self, message: _Optional[str] = ..., owned: _Optional[_Iterable[_Union[PartitionRange, _Mapping]]] = ..., map_version: _Optional[int] = ..., owner: _Optional[_Union[PartitionRange, _Mapping]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("entries", "map_version", "conditions")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    map_version: int
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., map_version: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("status", "seq", "partition_id", "hint", "timestamp", "failure")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    status: Status
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    failure: ConditionFailure
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ..., failure: _Optional[_Union[ConditionFailure, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("keys", "map_version", "conditions")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    map_version: int
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., map_version: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("status", "removed", "seq", "partition_id", "hint", "timestamp", "failure")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    status: Status
    removed: int
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    failure: ConditionFailure
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., removed: _Optional[int] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ..., failure: _Optional[_Union[ConditionFailure, _Mapping]] = ...) -> None: ...

class CounterDelta(_message.Message):
    __slots__ = ("key", "delta")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    delta: int
    def __init__(self, key: _Optional[bytes] = ..., delta: _Optional[int] = ...) -> None: ...

class IncrementRequest(_message.Message):
    __slots__ = ("deltas", "map_version")
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    deltas: _containers.RepeatedCompositeFieldContainer[CounterDelta]
    map_version: int
    def __init__(self, deltas: _Optional[_Iterable[_Union[CounterDelta, _Mapping]]] = ..., map_version: _Optional[int] = ...) -> None: ...

class IncrementResponse(_message.Message):
    __slots__ = ("status", "values", "seq", "partition_id", "hint", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: Status
    values: _containers.RepeatedScalarFieldContainer[int]
    seq: int
    partition_id: str
    hint: RoutingHint
    timestamp: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., values: _Optional[_Iterable[int]] = ..., seq: _Optional[int] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("keys", "map_version")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    map_version: int
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., map_version: _Optional[int] = ...) -> None: ...

class Lookup(_message.Message):
    __slots__ = ("found", "value", "seq", "timestamp")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    seq: int
    timestamp: int
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("status", "items", "partition_id", "hint", "seq")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    status: Status
    items: _containers.RepeatedCompositeFieldContainer[Lookup]
    partition_id: str
    hint: RoutingHint
    seq: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., items: _Optional[_Iterable[_Union[Lookup, _Mapping]]] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("start", "end", "limit", "keys_only")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    start: bytes
    end: bytes
    limit: int
    keys_only: bool
    def __init__(self, start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., limit: _Optional[int] = ..., keys_only: _Optional[bool] = ...) -> None: ...

class KeyValue(_message.Message):
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

class ScanResponse(_message.Message):
    __slots__ = ("status", "items", "partition_id", "hint", "seq", "more", "next_start")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_START_FIELD_NUMBER: _ClassVar[int]
    status: Status
    items: _containers.RepeatedCompositeFieldContainer[KeyValue]
    partition_id: str
    hint: RoutingHint
    seq: int
    more: bool
    next_start: bytes
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., items: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., seq: _Optional[int] = ..., more: _Optional[bool] = ..., next_start: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start", "end", "from_seq")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    start: bytes
    end: bytes
    from_seq: int
    def __init__(self, start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., from_seq: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("key", "value", "removed", "seq", "timestamp")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    removed: bool
    seq: int
    timestamp: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., removed: _Optional[bool] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("status", "changes", "partition_id", "hint", "progress_seq")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_SEQ_FIELD_NUMBER: _ClassVar[int]
    status: Status
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    partition_id: str
    hint: RoutingHint
    progress_seq: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., partition_id: _Optional[str] = ..., hint: _Optional[_Union[RoutingHint, _Mapping]] = ..., progress_seq: _Optional[int] = ...) -> None: ...

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

class SessionRequest(_message.Message):
    __slots__ = ("id", "timeout_ms", "get", "upsert", "remove", "increment", "batch_get")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    BATCH_GET_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    get: GetRequest
    upsert: UpsertRequest
    remove: RemoveRequest
    increment: IncrementRequest
    batch_get: BatchGetRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., upsert: _Optional[_Union[UpsertRequest, _Mapping]] = ..., remove: _Optional[_Union[RemoveRequest, _Mapping]] = ..., increment: _Optional[_Union[IncrementRequest, _Mapping]] = ..., batch_get: _Optional[_Union[BatchGetRequest, _Mapping]] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("code", "message", "retry_after")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after: float
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after: _Optional[float] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("id", "get", "upsert", "remove", "increment", "batch_get", "error", "max_in_flight", "max_in_flight_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    BATCH_GET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    get: GetResponse
    upsert: UpsertResponse
    remove: RemoveResponse
    increment: IncrementResponse
    batch_get: BatchGetResponse
    error: SessionError
    max_in_flight: int
    max_in_flight_bytes: int
    def __init__(self, id: _Optional[int] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., upsert: _Optional[_Union[UpsertResponse, _Mapping]] = ..., remove: _Optional[_Union[RemoveResponse, _Mapping]] = ..., increment: _Optional[_Union[IncrementResponse, _Mapping]] = ..., batch_get: _Optional[_Union[BatchGetResponse, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ..., max_in_flight: _Optional[int] = ..., max_in_flight_bytes: _Optional[int] = ...) -> None: ...
