import purerpc
import mkv.v1.wal_pb2 as mkv_dot_v1_dot_wal__pb2
import mkv.v1.data_pb2 as mkv_dot_v1_dot_data__pb2