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

    async def Increment(self, input_message):
        raise NotImplementedError()

    async def BatchGet(self, input_message):
        raise NotImplementedError()

    async def Scan(self, input_message):
        raise NotImplementedError()

    async def Watch(self, input_message):
        raise NotImplementedError()

    async def Session(self, input_messages):
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
        service_obj.add_method(
            "Increment",
            self.Increment,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.IncrementRequest,
                mkv_dot_v1_dot_data__pb2.IncrementResponse,
            )
        )
        service_obj.add_method(
            "BatchGet",
            self.BatchGet,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.BatchGetRequest,
                mkv_dot_v1_dot_data__pb2.BatchGetResponse,
            )
        )
        service_obj.add_method(
            "Scan",
            self.Scan,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                mkv_dot_v1_dot_data__pb2.ScanRequest,
                mkv_dot_v1_dot_data__pb2.ScanResponse,
            )
        )
        service_obj.add_method(
            "Watch",
            self.Watch,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                mkv_dot_v1_dot_data__pb2.WatchRequest,
                mkv_dot_v1_dot_data__pb2.WatchResponse,
            )
        )
        service_obj.add_method(
            "Session",
            self.Session,
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                mkv_dot_v1_dot_data__pb2.SessionRequest,
                mkv_dot_v1_dot_data__pb2.SessionResponse,
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
        self.Increment = self._client.get_method_stub(
            "Increment",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.IncrementRequest,
                mkv_dot_v1_dot_data__pb2.IncrementResponse,
            )
        )
        self.BatchGet = self._client.get_method_stub(
            "BatchGet",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_data__pb2.BatchGetRequest,
                mkv_dot_v1_dot_data__pb2.BatchGetResponse,
            )
        )
        self.Scan = self._client.get_method_stub(
            "Scan",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                mkv_dot_v1_dot_data__pb2.ScanRequest,
                mkv_dot_v1_dot_data__pb2.ScanResponse,
            )
        )
        self.Watch = self._client.get_method_stub(
            "Watch",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                mkv_dot_v1_dot_data__pb2.WatchRequest,
                mkv_dot_v1_dot_data__pb2.WatchResponse,
            )
        )
        self.Session = self._client.get_method_stub(
            "Session",
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                mkv_dot_v1_dot_data__pb2.SessionRequest,
                mkv_dot_v1_dot_data__pb2.SessionResponse,
            )
        )