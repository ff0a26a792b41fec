"""What CPU this process runs on, and which fast paths it offers (read once from /proc/cpuinfo).

Machines differ: some have AVX-512 VNNI (fast int8 dot products) or AMX, others
only AVX2. The serving layer reports the choice it made in ``/healthz``, and
every benchmark prints :func:`describe` with its figures.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from functools import lru_cache

from core.onnx_sessions import bf16_available

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class Cpu:
    model: str
    cores: int
    machine: str
    flags: tuple[str, ...] = field(default_factory=tuple)

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
        """AMX bf16 tiles: where computing in bf16 pays (torch training needs nothing more)."""
        return "amx_bf16" in self.flags

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
                "int8_path": self.int8_path, "cross_encoder_precision": self.cross_encoder_precision}


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


@lru_cache(maxsize=1)
def cpu() -> Cpu:
    """This machine's CPU (model, cores, fast-path flags)."""
    try:
        with open("/proc/cpuinfo") as handle:
            model, flags = parse_cpuinfo(handle.read())
    except OSError:
        model, flags = platform.processor() or "unknown CPU", ()
    return Cpu(model=model, cores=os.cpu_count() or 1, machine=platform.machine(), flags=flags)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's or taskset's limit),
    else every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
    return (f"{c.cores} cores {c.machine} {c.model}{flags}; int8 path: {c.int8_path}; "
            f"cross-encoder precision (auto): {c.cross_encoder_precision}")
