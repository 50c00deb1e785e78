"""Generated code in mkv/v1 must be exactly what `just protos` writes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rpc_in_the_protos_is_served() -> None:
    """A method added to a .proto without a handler would answer UNIMPLEMENTED."""
    from mkv.node.controlplane import ControlPlane
    from mkv.node.dataplane import DataPlane
    from mkv.node.replication import ReplicationService
    from mkv.v1 import control_pb2, data_pb2, replication_pb2

    served = {
        "DataPlane": set(DataPlane.methods(DataPlane.__new__(DataPlane))),
        "ControlPlane": set(ControlPlane.methods(ControlPlane.__new__(ControlPlane))),
        "Replication": set(
            ReplicationService.methods(ReplicationService.__new__(ReplicationService))
        ),
    }
    declared = {
        "DataPlane": set(data_pb2.DESCRIPTOR.services_by_name["DataPlane"].methods_by_name),
        "ControlPlane": set(
            control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name
        ),
        "Replication": set(
            replication_pb2.DESCRIPTOR.services_by_name["Replication"].methods_by_name
        ),
    }
    assert served == declared


async def test_every_rpc_of_every_service_on_each_port_has_a_handler(tmp_path: Path) -> None:
    """Health, reflection and the planes: what a port lists is what it serves."""
    from google.protobuf import descriptor_pool

    from mkv.testing import running_node

    async with running_node(tmp_path / "data") as node:
        servers = [node._data_server, node._control_server]
    for server in servers:
        assert server is not None
        # The planes, health, reflection (two versions); the control port
        # also serves mkv.v1.Replication (node to node).
        expected = 4 if server is node._data_server else 5
        assert len(server.service_names) == expected, server.service_names
        for name in server.service_names:
            declared = descriptor_pool.Default().FindServiceByName(name).methods_by_name
            served = server._services[name].methods
            assert set(served) == set(declared), name
            for method_name, method in served.items():
                assert (
                    method.request_type.DESCRIPTOR.full_name
                    == declared[method_name].input_type.full_name
                )


def test_vendored_protos_match_grpcios_byte_for_byte() -> None:
    """One descriptor pool holds one file per name: ours and grpcio's packages
    can be imported together only while the two are identical."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    from mkv.std import health_v1_pb2, reflection_v1_pb2, reflection_v1alpha_pb2

    assert health_v1_pb2.DESCRIPTOR.serialized_pb == health_pb2.DESCRIPTOR.serialized_pb
    assert (
        reflection_v1alpha_pb2.DESCRIPTOR.serialized_pb == reflection_pb2.DESCRIPTOR.serialized_pb
    )
    # v1 is v1alpha with another package name (grpcio-reflection has no v1 yet).
    v1 = {
        m.name: [f.name for f in m.fields]
        for m in reflection_v1_pb2.DESCRIPTOR.message_types_by_name.values()
    }
    alpha = {
        m.name: [f.name for f in m.fields]
        for m in reflection_v1alpha_pb2.DESCRIPTOR.message_types_by_name.values()
    }
    assert v1 == alpha
