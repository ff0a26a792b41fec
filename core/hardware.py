"""What CPU this process runs on, and which fast paths it offers (read once from /proc/cpuinfo).

Machines differ: some have AVX-512 VNNI (fast int8 dot products) or AMX, others
only AVX2. The serving layer reports the choice it made in ``/healthz``, and
every benchmark prints :func:`describe` with its figures.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core.onnx_sessions import bf16_available

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
# SHOPRANK_CPU_HIDE=amx,avx512,avx_vnni: run as on a CPU without those features (benchmarks/cpu_mask.py
# hides them from the libraries too, through CPUID); each group and the flags it hides.
HIDDEN_GROUPS = {"amx": ("amx_int8", "amx_bf16"), "avx512": ("avx512f", "avx512_vnni", "avx512_bf16"),
                 "avx_vnni": ("avx_vnni",)}


@dataclass(frozen=True)
class Cpu:
    model: str
    cores: int
    machine: str
    flags: tuple[str, ...] = field(default_factory=tuple)
    hidden: tuple[str, ...] = field(default_factory=tuple)  # groups of HIDDEN_GROUPS hidden by SHOPRANK_CPU_HIDE

    @property
    def int8_path(self) -> str:
        """The int8 kernel family ONNX Runtime can use here (best first)."""
        if "amx_int8" in self.flags:
            return "amx"
        if "avx512_vnni" in self.flags or "avx_vnni" in self.flags:
            return "vnni"
        return "avx2" if "avx2" in self.flags else "generic"

    @property
    def amx_bf16(self) -> bool:
        """AMX bf16 tiles (Intel Xeon since Sapphire Rapids)."""
        return "amx_bf16" in self.flags

    @property
    def torch_bf16(self) -> bool:
        """bf16 dot products in hardware, AMX tiles or AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper
        Lake): where torch training in bf16 pays. It needs nothing more than torch."""
        return self.amx_bf16 or "avx512_bf16" in self.flags

    @property
    def onnx_bf16(self) -> bool:
        """AMX bf16 tiles and the OpenVINO execution provider that runs ONNX models on them: where
        ``auto`` makes the cross-encoders and catalog encoding bf16."""
        return self.amx_bf16 and bf16_available()

    @property
    def cross_encoder_precision(self) -> str:
        """What ``ranking.precision: auto`` serves here: bf16 on a CPU with AMX bf16 tiles when the
        OpenVINO execution provider is installed (measured fastest there, and closer to fp32 than
        int8); else int8 wherever ONNX Runtime has int8 kernels for this CPU (AMX, VNNI, AVX2:
        measured fastest on AVX2 and VNNI), fp32 elsewhere."""
        if self.onnx_bf16:
            return "bf16"
        return "int8" if self.int8_path in ("amx", "vnni", "avx2") else "fp32"

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "cores": self.cores, "machine": self.machine, "flags": list(self.flags),
                "hidden": list(self.hidden), "int8_path": self.int8_path,
                "cross_encoder_precision": self.cross_encoder_precision}


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, the :data:`FLAGS` present) from the text of /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, tuple(f for f in FLAGS if f in flags)


def hidden_groups(value: str) -> tuple[str, ...]:
    """The groups named by a SHOPRANK_CPU_HIDE value ("amx,avx512"); ValueError naming an unknown one."""
    groups = tuple(g.strip() for g in value.split(",") if g.strip())
    unknown = [g for g in groups if g not in HIDDEN_GROUPS]
    if unknown:
        raise ValueError(f"SHOPRANK_CPU_HIDE={value!r}: unknown {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(HIDDEN_GROUPS)} (comma-separated)")
    return groups


@lru_cache(maxsize=1)
def cpu() -> Cpu:
    """This machine's CPU (model, cores, fast-path flags less those SHOPRANK_CPU_HIDE hides)."""
    try:
        with open("/proc/cpuinfo") as handle:
            model, flags = parse_cpuinfo(handle.read())
    except OSError:
        model, flags = platform.processor() or "unknown CPU", ()
    hidden = hidden_groups(os.environ.get("SHOPRANK_CPU_HIDE", ""))
    return Cpu(model=model, cores=os.cpu_count() or 1, machine=platform.machine(),
               flags=visible_flags(flags, hidden), hidden=hidden)


def visible_flags(flags: tuple[str, ...], hidden: tuple[str, ...]) -> tuple[str, ...]:
    """``flags`` less those of the ``hidden`` groups."""
    gone = {flag for group in hidden for flag in HIDDEN_GROUPS[group]}
    return tuple(f for f in flags if f not in gone)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity (taskset's, a cpuset's), and no more than a CPU quota
    allows (a container limited to 2 CPUs on a 64-core node: 2; cgroup v2 ``cpu.max``, else v1's
    ``cpu.cfs_quota_us``), rounded up; else every core of the machine."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs the process's cgroup may use (quota / period), or None when it has no quota."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            fields = v2.read_text().split()  # "QUOTA PERIOD" in microseconds, or "max PERIOD"
            return None if fields[0] == "max" else int(fields[0]) / int(fields[1] if len(fields) > 1 else 100_000)
        v1_quota, v1_period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def cores_per_process(processes: int) -> int:
    """Each one's share of the usable cores when ``processes`` processes share them, at least one."""
    return max(1, usable_cores() // max(1, processes))


def limit_math_threads(threads: int) -> int:
    """One math thread per search, as a server runs (``serving.math_threads``): OpenMP (FAISS
    reads the variable when it loads; if it is loaded already, it is told now) and the BLAS
    NumPy loaded (set now); child processes inherit both. 0, or OMP_NUM_THREADS in the
    environment: left alone. Returns the threads in force (0: the libraries' default)."""
    if not threads or "OMP_NUM_THREADS" in os.environ:
        return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    threadpool_limits(limits=threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)
    return threads


def describe() -> str:
    """One line for benchmark output: cores, architecture, model, flags, and the paths chosen."""
    c = cpu()
    flags = f" [{', '.join(c.flags)}]" if c.flags else ""
    if c.hidden:
        flags += f" (hidden: {', '.join(c.hidden)})"
    return (f"{c.cores} cores {c.machine} {c.model}{flags}; int8 path: {c.int8_path}; "
            f"cross-encoder precision (auto): {c.cross_encoder_precision}")
