"""Run a command as on a CPU without AMX, AVX-512 or AVX-VNNI: measure another machine's code paths here.

ONNX Runtime, NumPy and OpenVINO choose their kernels from the CPUID instruction. On a Linux
x86-64 CPU with CPUID faulting (``cpuid_fault`` in /proc/cpuinfo, which most KVM guests have),
``native/cpuid_mask.c``, preloaded into the command and every process it starts, hides the named
features from CPUID; ``SHOPRANK_CPU_HIDE`` tells ShopRank's own detection (``/healthz`` and
every benchmark's hardware line say ``hidden: ...``). The clock, caches and cores stay this
machine's: figures show what the kernels cost here, not what another CPU model would do.

    python benchmarks/cpu_mask.py --as avx2 -- python benchmarks/load_streams.py --dataset D
    python benchmarks/cpu_mask.py --as vnni -- python benchmarks/rerank_latency.py
    python benchmarks/cpu_mask.py --hide amx,avx512 -- python -c "import numpy; numpy.show_runtime()"

``--as avx2``: AVX2 only (as an AMD EPYC Zen 3); ``--as vnni``: AVX-512 VNNI without AMX.
Builds the library with ``cc`` into ``artifacts/native/`` the first time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.hardware import hidden_groups  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parent / "native" / "cpuid_mask.c"
PRESETS = {"avx2": "amx,avx512,avx_vnni", "vnni": "amx"}


def library(out_dir: Path = ROOT / "artifacts" / "native") -> Path:
    """The compiled mask library, built from :data:`SOURCE` when it changed."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = out_dir / f"cpuid_mask-{digest}.so"
    if not target.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp")
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)],
                       check=True)
        partial.replace(target)
    return target


def can_mask(cpuinfo: str | None = None) -> bool:
    """Whether this CPU and kernel offer CPUID faulting."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(line.startswith("flags") and "cpuid_fault" in line.split() for line in cpuinfo.splitlines())


def masked_env(hide: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the library preloaded and ``hide`` hidden."""
    env = dict(os.environ if env is None else env)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library()}:{preload}" if preload else str(library())
    env["SHOPRANK_CPU_HIDE"] = hide
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--as", dest="preset", choices=sorted(PRESETS), help="a CPU class to run as")
    which.add_argument("--hide", help="comma-separated groups to hide: amx, avx512, avx_vnni")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: cpu_mask.py --as avx2 -- COMMAND ...")
    hide = PRESETS[args.preset] if args.preset else args.hide
    try:
        hidden_groups(hide)
    except ValueError as error:
        parser.error(str(error))
    if not can_mask():
        print("cpu_mask: this CPU or kernel has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)", file=sys.stderr)
        return 3
    env = masked_env(hide)
    print(f"cpu_mask: hiding {hide} from {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        os.execvpe(command[0], command, env)
    except OSError as error:  # not found, not executable
        print(f"cpu_mask: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
