import purerpc
import mkv.v1.data_pb2 as mkv_dot_v1_dot_data__pb2


class DataPlaneServicer(purerpc.Servicer):
    async def Upsert(self, input_message):
        raise NotImplementedError()

    async def Get(self, input_message):
        raise NotImplementedError()

    async def Remove(self, input_message):
        raise NotImplementedError()

    async def PartitionMap(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "mkv.v1.DataPlane"
        )
        service_obj.add_method(
            "Upsert",
            self.Upsert,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.UpsertRequest,
                mkv_dot_v1_dot_data__pb2.UpsertResponse,
            )
        )
        service_obj.add_method(
            "Get",
            self.Get,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.GetRequest,
                mkv_dot_v1_dot_data__pb2.GetResponse,
            )
        )
        service_obj.add_method(
            "Remove",
            self.Remove,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.RemoveRequest,
                mkv_dot_v1_dot_data__pb2.RemoveResponse,
            )
        )
        service_obj.add_method(
            "PartitionMap",
            self.PartitionMap,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.PartitionMapRequest,
                mkv_dot_v1_dot_data__pb2.PartitionMapResponse,
            )
        )
        return service_obj


class DataPlaneStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "mkv.v1.DataPlane",
            channel
        )
        self.Upsert = self._client.get_method_stub(
            "Upsert",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.UpsertRequest,
                mkv_dot_v1_dot_data__pb2.UpsertResponse,
            )
        )
        self.Get = self._client.get_method_stub(
            "Get",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.GetRequest,
                mkv_dot_v1_dot_data__pb2.GetResponse,
            )
        )
        self.Remove = self._client.get_method_stub(
            "Remove",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.RemoveRequest,
                mkv_dot_v1_dot_data__pb2.RemoveResponse,
            )
        )
        self.PartitionMap = self._client.get_method_stub(
            "PartitionMap",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.PartitionMapRequest,
                mkv_dot_v1_dot_data__pb2.PartitionMapResponse,
            )
        )