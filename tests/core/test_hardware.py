"""CPU detection from /proc/cpuinfo text."""

from __future__ import annotations

from core.hardware import Cpu, cpu, parse_cpuinfo

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
