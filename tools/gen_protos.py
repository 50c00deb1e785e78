"""Generate the protobuf and purerpc modules in mkv/v1 from protos/.

    python tools/gen_protos.py           # write mkv/v1/*_pb2.py, *_grpc.py
    python tools/gen_protos.py --check   # exit 1 when the checked-in code is stale

Generated modules import each other by proto path (``mkv.v1.data_pb2``), so
``protos/mkv/v1/*.proto`` generates straight into the ``mkv`` package.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "mkv" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every proto file into ``out_root``; return the files written."""
    sources = sorted(PROTOS.rglob("*.proto"))
    env = dict(os.environ)
    # protoc finds its purerpc plugin on PATH; it lives beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTOS}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--purerpc_out={out_root}",
            *(str(s.relative_to(PROTOS)) for s in sources),
        ],
        check=True,
        env=env,
    )
    return sorted((out_root / "mkv" / "v1").glob("*_p*.py*")) + sorted(
        (out_root / "mkv" / "v1").glob("*_grpc.py")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when mkv/v1 is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = []
        for path in produced:
            target = OUTPUT / path.name
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
