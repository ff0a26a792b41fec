"""CPU detection from /proc/cpuinfo text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.hardware import Cpu, cpu, hidden_groups, parse_cpuinfo, visible_flags

ROOT = Path(__file__).resolve().parents[2]

INFO = """processor\t: 0
model name\t: AMD EPYC 9454
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9454
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""


def test_flags_and_int8_path_from_cpuinfo() -> None:
    model, flags = parse_cpuinfo(INFO)
    assert model == "AMD EPYC 9454" and flags == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert Cpu(model, 2, "x86_64", flags).int8_path == "vnni"
    assert Cpu(model, 2, "x86_64", ("avx2",)).int8_path == "avx2"
    assert Cpu(model, 2, "x86_64", ("avx2", "amx_int8")).int8_path == "amx"
    assert Cpu("?", 1, "aarch64", ()).int8_path == "generic"


def test_this_machine_is_read() -> None:
    here = cpu()
    assert here.cores >= 1 and here.model and set(here.flags) <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                   "avx512_bf16", "amx_int8", "amx_bf16"}


def test_auto_precision_follows_the_int8_kernels() -> None:
    from core.hardware import Cpu

    assert Cpu("x", 2, "x86_64", ("avx2", "avx512_vnni")).cross_encoder_precision == "int8"
    assert Cpu("x", 2, "x86_64", ("avx2",)).cross_encoder_precision == "int8"
    assert Cpu("x", 2, "aarch64", ()).cross_encoder_precision == "fp32"
    assert "cross_encoder_precision" in Cpu("x", 2, "x86_64", ("amx_int8",)).as_dict()


def test_auto_precision_is_bf16_on_amx_with_the_openvino_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.hardware

    amx = Cpu("x", 2, "x86_64", ("avx2", "avx512_vnni", "amx_int8", "amx_bf16"))
    monkeypatch.setattr(core.hardware, "bf16_available", lambda: True)
    assert amx.cross_encoder_precision == "bf16" and amx.onnx_bf16 and amx.amx_bf16
    assert Cpu("x", 2, "x86_64", ("avx2", "avx512_vnni", "avx512_bf16")).cross_encoder_precision == "int8"
    monkeypatch.setattr(core.hardware, "bf16_available", lambda: False)  # the plugin not installed
    assert amx.cross_encoder_precision == "int8" and not amx.onnx_bf16
    assert amx.amx_bf16 and amx.torch_bf16  # torch training needs no plugin
    zen4 = Cpu("x", 2, "x86_64", ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"))
    assert zen4.torch_bf16 and not zen4.amx_bf16 and not zen4.onnx_bf16
    assert not Cpu("x", 2, "x86_64", ("avx2", "avx512f", "avx512_vnni")).torch_bf16


def test_math_threads_are_limited_after_faiss_loaded() -> None:
    """A benchmark or embedder that loaded FAISS already gets the server's one math thread per search."""
    code = ("import faiss, numpy; from threadpoolctl import threadpool_info; "
            "from core.hardware import limit_math_threads; "
            "print(limit_math_threads(1), faiss.omp_get_max_threads(), "
            "{p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'})")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          cwd=ROOT)
    assert done.stdout.split() == ["1", "1", "{1}"], done.stdout
    kept = subprocess.run([sys.executable, "-c", "from core.hardware import limit_math_threads; "
                           "print(limit_math_threads(1))"], capture_output=True, text=True, check=True,
                          env=env | {"OMP_NUM_THREADS": "3"}, cwd=ROOT)
    assert kept.stdout.strip() == "3"  # the environment wins


def test_hidden_groups_take_their_flags_away() -> None:
    _, flags = parse_cpuinfo(INFO.replace("avx512_bf16", "avx512_bf16 amx_int8 amx_bf16"))
    assert Cpu("x", 2, "x86_64", visible_flags(flags, hidden_groups("amx"))).int8_path == "vnni"
    assert visible_flags(flags, hidden_groups("amx, avx512,avx_vnni")) == ("avx2",)
    assert visible_flags(flags, hidden_groups("")) == flags
    with pytest.raises(ValueError, match="'avx512f'.*allowed: amx, avx512, avx_vnni"):
        hidden_groups("amx,avx512f")


def test_the_cpuid_mask_hides_avx512_from_the_libraries() -> None:
    """benchmarks/cpu_mask.py: NumPy's own CPUID probe and ShopRank's detection both lose AVX-512."""
    from benchmarks.cpu_mask import can_mask, library, masked_env

    if not can_mask() or "avx512f" not in cpu().flags:
        pytest.skip("needs CPUID faulting and AVX-512 on this CPU")
    try:
        library()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no C compiler here")
    code = ("from numpy._core._multiarray_umath import __cpu_features__ as f; from core.hardware import cpu; "
            "print(f['AVX512F'], f['AVX2'], cpu().int8_path, ','.join(cpu().hidden))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}  # it would take the SIGSEGV handler
    masked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                            env=masked_env("amx,avx512,avx_vnni", env))
    assert masked.stdout.split() == ["False", "True", "avx2", "amx,avx512,avx_vnni"], masked.stderr
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                           env=env | {"SHOPRANK_CPU_HIDE": ""})
    assert plain.stdout.split()[0] == "True"
    refused = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, text=True, cwd=ROOT,
                             env=masked_env("amx,sse", env))
    assert refused.returncode == 2 and "unknown 'sse'" in refused.stderr
    missing = subprocess.run([sys.executable, "benchmarks/cpu_mask.py", "--as", "avx2", "--", "no-such-command-here"],
                             capture_output=True, text=True, cwd=ROOT, env=env)
    assert missing.returncode == 127 and "cannot run 'no-such-command-here'" in missing.stderr


def test_a_cpu_quota_caps_the_usable_cores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.hardware import cpu_quota

    assert cpu_quota(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None
