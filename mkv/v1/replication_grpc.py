import purerpc
import mkv.v1.replication_pb2 as mkv_dot_v1_dot_replication__pb2
import mkv.v1.data_pb2 as mkv_dot_v1_dot_data__pb2


class ReplicationServicer(purerpc.Servicer):
    async def Fetch(self, input_messages):
        raise NotImplementedError()

    async def Handover(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "mkv.v1.Replication"
        )
        service_obj.add_method(
            "Fetch",
            self.Fetch,
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                mkv_dot_v1_dot_replication__pb2.FetchRequest,
                mkv_dot_v1_dot_replication__pb2.FetchResponse,
            )
        )
        service_obj.add_method(
            "Handover",
            self.Handover,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_replication__pb2.HandoverRequest,
                mkv_dot_v1_dot_replication__pb2.HandoverResponse,
            )
        )
        return service_obj


class ReplicationStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "mkv.v1.Replication",
            channel
        )
        self.Fetch = self._client.get_method_stub(
            "Fetch",
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                mkv_dot_v1_dot_replication__pb2.FetchRequest,
                mkv_dot_v1_dot_replication__pb2.FetchResponse,
            )
        )
        self.Handover = self._client.get_method_stub(
            "Handover",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                mkv_dot_v1_dot_replication__pb2.HandoverRequest,
                mkv_dot_v1_dot_replication__pb2.HandoverResponse,
            )
        )