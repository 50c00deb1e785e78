import purerpc
import mkv.v1.control_pb2 as mkv_dot_v1_dot_control__pb2


class ControlPlaneServicer(purerpc.Servicer):
    async def AddPartition(self, input_message):
        raise NotImplementedError()

    async def RemovePartition(self, input_message):
        raise NotImplementedError()

    async def ReopenPartition(self, input_message):
        raise NotImplementedError()

    async def ListPartitions(self, input_message):
        raise NotImplementedError()

    async def Snapshot(self, input_message):
        raise NotImplementedError()

    async def GetOperation(self, input_message):
        raise NotImplementedError()

    async def SplitPartition(self, input_message):
        raise NotImplementedError()

    async def MergePartitions(self, input_message):
        raise NotImplementedError()

    async def NodeStatus(self, input_message):
        raise NotImplementedError()

    async def MovePartition(self, input_message):
        raise NotImplementedError()

    async def DrainNode(self, input_message):
        raise NotImplementedError()

    async def ListNodes(self, input_message):
        raise NotImplementedError()

    async def TransferLeader(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "mkv.v1.ControlPlane"
        )
        service_obj.add_method(
            "AddPartition",
            self.AddPartition,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.AddPartitionRequest,
                mkv_dot_v1_dot_control__pb2.AddPartitionResponse,
            )
        )
        service_obj.add_method(
            "RemovePartition",
            self.RemovePartition,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.RemovePartitionRequest,
                mkv_dot_v1_dot_control__pb2.RemovePartitionResponse,
            )
        )
        service_obj.add_method(
            "ReopenPartition",
            self.ReopenPartition,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ReopenPartitionRequest,
                mkv_dot_v1_dot_control__pb2.ReopenPartitionResponse,
            )
        )
        service_obj.add_method(
            "ListPartitions",
            self.ListPartitions,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ListPartitionsRequest,
                mkv_dot_v1_dot_control__pb2.ListPartitionsResponse,
            )
        )
        service_obj.add_method(
            "Snapshot",
            self.Snapshot,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.SnapshotRequest,
                mkv_dot_v1_dot_control__pb2.SnapshotResponse,
            )
        )
        service_obj.add_method(
            "GetOperation",
            self.GetOperation,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.GetOperationRequest,
                mkv_dot_v1_dot_control__pb2.GetOperationResponse,
            )
        )
        service_obj.add_method(
            "SplitPartition",
            self.SplitPartition,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.SplitPartitionRequest,
                mkv_dot_v1_dot_control__pb2.SplitPartitionResponse,
            )
        )
        service_obj.add_method(
            "MergePartitions",
            self.MergePartitions,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.MergePartitionsRequest,
                mkv_dot_v1_dot_control__pb2.MergePartitionsResponse,
            )
        )
        service_obj.add_method(
            "NodeStatus",
            self.NodeStatus,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.NodeStatusRequest,
                mkv_dot_v1_dot_control__pb2.NodeStatusResponse,
            )
        )
        service_obj.add_method(
            "MovePartition",
            self.MovePartition,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.MovePartitionRequest,
                mkv_dot_v1_dot_control__pb2.MovePartitionResponse,
            )
        )
        service_obj.add_method(
            "DrainNode",
            self.DrainNode,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.DrainNodeRequest,
                mkv_dot_v1_dot_control__pb2.DrainNodeResponse,
            )
        )
        service_obj.add_method(
            "ListNodes",
            self.ListNodes,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ListNodesRequest,
                mkv_dot_v1_dot_control__pb2.ListNodesResponse,
            )
        )
        service_obj.add_method(
            "TransferLeader",
            self.TransferLeader,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.TransferLeaderRequest,
                mkv_dot_v1_dot_control__pb2.TransferLeaderResponse,
            )
        )
        return service_obj


class ControlPlaneStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "mkv.v1.ControlPlane",
            channel
        )
        self.AddPartition = self._client.get_method_stub(
            "AddPartition",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.AddPartitionRequest,
                mkv_dot_v1_dot_control__pb2.AddPartitionResponse,
            )
        )
        self.RemovePartition = self._client.get_method_stub(
            "RemovePartition",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.RemovePartitionRequest,
                mkv_dot_v1_dot_control__pb2.RemovePartitionResponse,
            )
        )
        self.ReopenPartition = self._client.get_method_stub(
            "ReopenPartition",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ReopenPartitionRequest,
                mkv_dot_v1_dot_control__pb2.ReopenPartitionResponse,
            )
        )
        self.ListPartitions = self._client.get_method_stub(
            "ListPartitions",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ListPartitionsRequest,
                mkv_dot_v1_dot_control__pb2.ListPartitionsResponse,
            )
        )
        self.Snapshot = self._client.get_method_stub(
            "Snapshot",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.SnapshotRequest,
                mkv_dot_v1_dot_control__pb2.SnapshotResponse,
            )
        )
        self.GetOperation = self._client.get_method_stub(
            "GetOperation",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.GetOperationRequest,
                mkv_dot_v1_dot_control__pb2.GetOperationResponse,
            )
        )
        self.SplitPartition = self._client.get_method_stub(
            "SplitPartition",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.SplitPartitionRequest,
                mkv_dot_v1_dot_control__pb2.SplitPartitionResponse,
            )
        )
        self.MergePartitions = self._client.get_method_stub(
            "MergePartitions",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.MergePartitionsRequest,
                mkv_dot_v1_dot_control__pb2.MergePartitionsResponse,
            )
        )
        self.NodeStatus = self._client.get_method_stub(
            "NodeStatus",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.NodeStatusRequest,
                mkv_dot_v1_dot_control__pb2.NodeStatusResponse,
            )
        )
        self.MovePartition = self._client.get_method_stub(
            "MovePartition",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.MovePartitionRequest,
                mkv_dot_v1_dot_control__pb2.MovePartitionResponse,
            )
        )
        self.DrainNode = self._client.get_method_stub(
            "DrainNode",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.DrainNodeRequest,
                mkv_dot_v1_dot_control__pb2.DrainNodeResponse,
            )
        )
        self.ListNodes = self._client.get_method_stub(
            "ListNodes",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.ListNodesRequest,
                mkv_dot_v1_dot_control__pb2.ListNodesResponse,
            )
        )
        self.TransferLeader = self._client.get_method_stub(
            "TransferLeader",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_control__pb2.TransferLeaderRequest,
                mkv_dot_v1_dot_control__pb2.TransferLeaderResponse,
            )
        )