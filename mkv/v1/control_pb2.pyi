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
    PARTITION_FAILED: _ClassVar[PartitionState]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    RUNNING: _ClassVar[OperationState]
    DONE: _ClassVar[OperationState]
    FAILED: _ClassVar[OperationState]
PARTITION_STATE_UNSPECIFIED: PartitionState
STARTING: PartitionState
ACTIVE: PartitionState
DRAINING: PartitionState
STOPPED: PartitionState
PARTITION_FAILED: PartitionState
OPERATION_STATE_UNSPECIFIED: OperationState
RUNNING: OperationState
DONE: OperationState
FAILED: OperationState

class PartitionInfo(_message.Message):
    __slots__ = ("id", "start", "end", "store", "state", "key_count", "size_bytes", "last_seq", "pipeline", "node", "epoch", "replicas", "isr", "commit_seq", "replica_states")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLICA_STATES_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    store: str
    state: PartitionState
    key_count: int
    size_bytes: int
    last_seq: int
    pipeline: _containers.RepeatedScalarFieldContainer[str]
    node: str
    epoch: int
    replicas: _containers.RepeatedScalarFieldContainer[str]
    isr: _containers.RepeatedScalarFieldContainer[str]
    commit_seq: int
    replica_states: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store: _Optional[str] = ..., state: _Optional[_Union[PartitionState, str]] = ..., key_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., last_seq: _Optional[int] = ..., pipeline: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ..., epoch: _Optional[int] = ..., replicas: _Optional[_Iterable[str]] = ..., isr: _Optional[_Iterable[str]] = ..., commit_seq: _Optional[int] = ..., replica_states: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("node", "leader", "in_sync", "durable_seq", "lag_records", "lag_seconds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    leader: bool
    in_sync: bool
    durable_seq: int
    lag_records: int
    lag_seconds: float
    def __init__(self, node: _Optional[str] = ..., leader: _Optional[bool] = ..., in_sync: _Optional[bool] = ..., durable_seq: _Optional[int] = ..., lag_records: _Optional[int] = ..., lag_seconds: _Optional[float] = ...) -> None: ...

class AddPartitionRequest(_message.Message):
    __slots__ = ("id", "start", "end", "store", "pipeline", "snapshot", "node", "replicas")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    store: str
    pipeline: _containers.RepeatedScalarFieldContainer[str]
    snapshot: str
    node: str
    replicas: int
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store: _Optional[str] = ..., pipeline: _Optional[_Iterable[str]] = ..., snapshot: _Optional[str] = ..., node: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class AddPartitionResponse(_message.Message):
    __slots__ = ("partition", "warnings")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    partition: PartitionInfo
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partition: _Optional[_Union[PartitionInfo, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

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

class ReopenPartitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ReopenPartitionResponse(_message.Message):
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

class SnapshotRequest(_message.Message):
    __slots__ = ("partition_id", "path")
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    partition_id: str
    path: str
    def __init__(self, partition_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SnapshotResult(_message.Message):
    __slots__ = ("data_path", "manifest_path", "partition_id", "start", "end", "store_kind", "seq", "timestamp", "size", "sha256", "created", "pipeline")
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_PATH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_KIND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    data_path: str
    manifest_path: str
    partition_id: str
    start: bytes
    end: bytes
    store_kind: str
    seq: int
    timestamp: int
    size: int
    sha256: str
    created: str
    pipeline: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, data_path: _Optional[str] = ..., manifest_path: _Optional[str] = ..., partition_id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store_kind: _Optional[str] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., created: _Optional[str] = ..., pipeline: _Optional[_Iterable[str]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "partition_id", "state", "phase", "progress_done", "progress_total", "progress_unit", "snapshot", "error_code", "error_message", "started", "finished", "split", "merged", "moved", "drained")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_DONE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UNIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    partition_id: str
    state: OperationState
    phase: str
    progress_done: int
    progress_total: int
    progress_unit: str
    snapshot: SnapshotResult
    error_code: int
    error_message: str
    started: float
    finished: float
    split: SplitResult
    merged: PartitionInfo
    moved: PartitionInfo
    drained: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., partition_id: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., phase: _Optional[str] = ..., progress_done: _Optional[int] = ..., progress_total: _Optional[int] = ..., progress_unit: _Optional[str] = ..., snapshot: _Optional[_Union[SnapshotResult, _Mapping]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., split: _Optional[_Union[SplitResult, _Mapping]] = ..., merged: _Optional[_Union[PartitionInfo, _Mapping]] = ..., moved: _Optional[_Union[PartitionInfo, _Mapping]] = ..., drained: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ...) -> None: ...

class MovePartitionRequest(_message.Message):
    __slots__ = ("id", "node")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    node: str
    def __init__(self, id: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class MovePartitionResponse(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class DrainNodeResponse(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "data_address", "control_address", "replication_address", "version", "alive", "partitions", "started", "drained")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    id: str
    data_address: str
    control_address: str
    replication_address: str
    version: str
    alive: bool
    partitions: _containers.RepeatedScalarFieldContainer[str]
    started: str
    drained: bool
    def __init__(self, id: _Optional[str] = ..., data_address: _Optional[str] = ..., control_address: _Optional[str] = ..., replication_address: _Optional[str] = ..., version: _Optional[str] = ..., alive: _Optional[bool] = ..., partitions: _Optional[_Iterable[str]] = ..., started: _Optional[str] = ..., drained: _Optional[bool] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("id", "node")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    node: str
    def __init__(self, id: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: PartitionInfo
    def __init__(self, partition: _Optional[_Union[PartitionInfo, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "revision")
    NODES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    revision: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class MergePartitionsRequest(_message.Message):
    __slots__ = ("left", "right")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    left: str
    right: str
    def __init__(self, left: _Optional[str] = ..., right: _Optional[str] = ...) -> None: ...

class MergePartitionsResponse(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class SplitPartitionRequest(_message.Message):
    __slots__ = ("id", "at", "new_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    NEW_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    at: bytes
    new_id: str
    def __init__(self, id: _Optional[str] = ..., at: _Optional[bytes] = ..., new_id: _Optional[str] = ...) -> None: ...

class SplitPartitionResponse(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class SplitResult(_message.Message):
    __slots__ = ("parent", "partition")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    parent: PartitionInfo
    partition: PartitionInfo
    def __init__(self, parent: _Optional[_Union[PartitionInfo, _Mapping]] = ..., partition: _Optional[_Union[PartitionInfo, _Mapping]] = ...) -> None: ...

class GetOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartitionStatus(_message.Message):
    __slots__ = ("id", "start", "end", "store", "state", "inbox_depth", "in_flight", "last_seq", "has_wal", "wal_synced_seq", "watchers")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    HAS_WAL_FIELD_NUMBER: _ClassVar[int]
    WAL_SYNCED_SEQ_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    start: bytes
    end: bytes
    store: str
    state: PartitionState
    inbox_depth: int
    in_flight: int
    last_seq: int
    has_wal: bool
    wal_synced_seq: int
    watchers: int
    def __init__(self, id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., store: _Optional[str] = ..., state: _Optional[_Union[PartitionState, str]] = ..., inbox_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., last_seq: _Optional[int] = ..., has_wal: _Optional[bool] = ..., wal_synced_seq: _Optional[int] = ..., watchers: _Optional[int] = ...) -> None: ...

class NodeStatusResponse(_message.Message):
    __slots__ = ("version", "python_version", "started", "uptime_seconds", "data_dir", "snapshot_root", "data_address", "control_address", "partitions", "node_id", "cluster", "lease_valid", "lease_remaining_seconds", "cluster_revision")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ROOT_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    LEASE_VALID_FIELD_NUMBER: _ClassVar[int]
    LEASE_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    version: str
    python_version: str
    started: str
    uptime_seconds: float
    data_dir: str
    snapshot_root: str
    data_address: str
    control_address: str
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionStatus]
    node_id: str
    cluster: str
    lease_valid: bool
    lease_remaining_seconds: float
    cluster_revision: int
    def __init__(self, version: _Optional[str] = ..., python_version: _Optional[str] = ..., started: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., data_dir: _Optional[str] = ..., snapshot_root: _Optional[str] = ..., data_address: _Optional[str] = ..., control_address: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[PartitionStatus, _Mapping]]] = ..., node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., lease_valid: _Optional[bool] = ..., lease_remaining_seconds: _Optional[float] = ..., cluster_revision: _Optional[int] = ...) -> None: ...
