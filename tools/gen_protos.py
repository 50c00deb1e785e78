"""Generate the protobuf and purerpc modules in mkv/v1 from protos/.

    python tools/gen_protos.py           # write mkv/v1/*_pb2.py, *_grpc.py
    python tools/gen_protos.py --check   # exit 1 when the checked-in code is stale

Generated modules import each other by proto path (``mkv.v1.data_pb2``), so
``protos/mkv/v1/*.proto`` generates straight into the ``mkv`` package.

The standard gRPC protos vendored under ``protos/grpc_health`` and
``protos/grpc_reflection`` keep the file names grpcio's packages use (a
descriptor pool holds one file per name), import nothing, and are served by
mkv's own handlers: they get message modules only, renamed into ``mkv/std``
(``grpc_health/v1/health.proto`` → ``mkv/std/health_v1_pb2.py``).

mkv's own subset of etcd's v3 API under ``protos/etcd`` keeps etcd's proto
paths (``etcdserverpb/rpc.proto``, ``mvccpb/kv.proto``), so the descriptors
carry etcd's names; it gets message modules only (``mkv.etcd`` drives the
calls itself), flattened into ``mkv/etcd/pb`` with their imports of each
other rewritten to that package.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "mkv" / "v1"
STD_OUTPUT = ROOT / "mkv" / "std"
# Vendored proto directories, generated without purerpc stubs into mkv/std.
VENDORED = ("grpc_health", "grpc_reflection")
ETCD_PROTOS = PROTOS / "etcd"
ETCD_OUTPUT = ROOT / "mkv" / "etcd" / "pb"
# "from mvccpb import kv_pb2" in generated code → the package it is moved to.
_ETCD_IMPORT = re.compile(rb"^from (etcdserverpb|mvccpb) import ", re.MULTILINE)


def _protoc(
    out_root: Path, sources: list[Path], *, purerpc: bool, proto_path: Path = PROTOS
) -> None:
    env = dict(os.environ)
    # protoc finds its purerpc plugin on PATH; it lives beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={proto_path}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            *([f"--purerpc_out={out_root}"] if purerpc else []),
            *(str(s.relative_to(proto_path)) for s in sources),
        ],
        check=True,
        env=env,
    )


def generate(out_root: Path) -> dict[Path, Path]:
    """Run protoc over every proto file into ``out_root``.

    Returns:
        each file written → where it belongs in the repository.
    """
    ours = sorted((PROTOS / "mkv").rglob("*.proto"))
    vendored = sorted(p for d in VENDORED for p in (PROTOS / d).rglob("*.proto"))
    _protoc(out_root, ours, purerpc=True)
    _protoc(out_root, vendored, purerpc=False)
    produced = {
        path: OUTPUT / path.name
        for path in sorted((out_root / "mkv" / "v1").glob("*_p*.py*"))
        + sorted((out_root / "mkv" / "v1").glob("*_grpc.py"))
    }
    for source in vendored:
        # grpc_health/v1/health.proto → health_v1_pb2.py and health_v1_pb2.pyi
        folder = out_root / source.parent.relative_to(PROTOS)
        for path in sorted(folder.glob(f"{source.stem}_pb2.py*")):
            suffix = path.name.removeprefix(source.stem)
            produced[path] = STD_OUTPUT / f"{source.stem}_{source.parent.name}{suffix}"
    etcd_root = out_root / "etcd"
    etcd_root.mkdir()
    etcd = sorted(ETCD_PROTOS.rglob("*.proto"))
    _protoc(etcd_root, etcd, purerpc=False, proto_path=ETCD_PROTOS)
    for source in etcd:
        folder = etcd_root / source.parent.relative_to(ETCD_PROTOS)
        for path in sorted(folder.glob(f"{source.stem}_pb2.py*")):
            path.write_bytes(_ETCD_IMPORT.sub(rb"from mkv.etcd.pb import ", path.read_bytes()))
            produced[path] = ETCD_OUTPUT / path.name
    return produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = []
        for path, target in produced.items():
            if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                stale.append(target.relative_to(ROOT))
                if not args.check:
                    target.write_bytes(path.read_bytes())
    if args.check and stale:
        print("stale generated code (run `just protos`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
