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
    from mkv.controlplane import ControlPlane
    from mkv.dataplane import DataPlane
    from mkv.v1 import control_pb2, data_pb2

    served = {
        "DataPlane": set(DataPlane.methods(DataPlane.__new__(DataPlane))),
        "ControlPlane": set(ControlPlane.methods(ControlPlane.__new__(ControlPlane))),
    }
    declared = {
        "DataPlane": set(data_pb2.DESCRIPTOR.services_by_name["DataPlane"].methods_by_name),
        "ControlPlane": set(
            control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name
        ),
    }
    assert served == declared
