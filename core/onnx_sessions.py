"""ONNX Runtime sessions for the served models, on the CPU path this machine offers best.

Two paths, one ONNX Runtime API:

- ``cpu``: ONNX Runtime's own CPU kernels (MLAS), fp32 or int8 weights. Its int8 kernels use
  AVX2, AVX-512 VNNI or AMX; it has no bf16 matrix kernels.
- ``bf16``: the fp32 model run by the OpenVINO execution provider (the
  ``onnxruntime-ep-openvino`` plugin, registered with ONNX Runtime at run time), told to compute
  in bfloat16. On a CPU with AMX that uses its bf16 tile instructions: the teacher
  cross-encoder scored 20 pairs in 32 ms p50 on one core against 51 ms for ONNX Runtime's int8,
  with scores much closer to fp32's (benchmarks/RESULTS.md, "Cross-encoders in bf16 on AMX").
  On a CPU without bf16 instructions OpenVINO computes in fp32 instead.

Threads: ``threads`` intra-op threads (0: ONNX Runtime's default, one per core), never spinning
after a run, so the searches beside the model keep their core.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any

BF16_WIDTH_STEP = 8  # tokens: inputs on the bf16 path are padded to a multiple of this (see padded_width)
PLUGIN = "onnxruntime_ep_openvino"  # the OpenVINO execution provider plugin's Python package
_REGISTERED = "shoprank_openvino"
_lock = threading.Lock()
_device: Any = None  # the OpenVINO EP's CPU device, once found
_registered = False  # the plugin registered with ONNX Runtime (once per process: a second try is refused)


def padded_width(longest: int, step: int) -> int:
    """``longest`` tokens rounded up to a multiple of ``step``. OpenVINO keeps what it prepared for
    each input shape a session runs, so the bf16 path pads its inputs to ``BF16_WIDTH_STEP`` steps:
    a bounded set of shapes instead of one more for every new length."""
    return -(-longest // step) * step


def bf16_available() -> bool:
    """Whether the OpenVINO execution provider plugin is installed (the ``bf16`` path)."""
    return importlib.util.find_spec(PLUGIN) is not None


def _openvino_cpu() -> Any:
    """The OpenVINO EP's CPU device, registering the plugin with ONNX Runtime on first use."""
    global _device, _registered
    with _lock:
        if _device is not None:
            return _device
        import onnxruntime as ort

        if not bf16_available():
            raise RuntimeError("precision bf16 needs the OpenVINO execution provider plugin: "
                               "pip install onnxruntime-ep-openvino, or set ranking.precision to int8, fp32 or auto")
        plugin = importlib.import_module(PLUGIN)
        if not _registered:
            ort.register_execution_provider_library(_REGISTERED, plugin.get_library_path())
            _registered = True
        devices = [d for d in ort.get_ep_devices()
                   if d.ep_name == plugin.get_ep_name() and d.ep_metadata.get("ov_device") == "CPU"]
        if not devices:  # the plugin serves Intel CPUs only (an AMD EPYC lists none)
            raise RuntimeError("precision bf16: the OpenVINO execution provider found no CPU device it runs on "
                               "(it serves Intel CPUs); set ranking.precision or retrieval.catalog_precision "
                               "to int8, fp32 or auto")
        _device = devices[0]
        return _device


def bf16_runs() -> bool:
    """Whether the bf16 path runs on this machine: the plugin installed, and a CPU it serves."""
    try:
        _openvino_cpu()
    except Exception:  # noqa: BLE001 - ours (no device), or ONNX Runtime's own (a plugin that does not load)
        return False
    return True


def cpu_session(path: Path, threads: int = 0, bf16: bool = False) -> Any:
    """An inference session over the ONNX file at ``path``.

    Args:
        threads: intra-op threads (0: one per core).
        bf16: run the (fp32) model on the OpenVINO execution provider in bfloat16 (see above);
            else on ONNX Runtime's CPU kernels at the file's own precision.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads keep both cores busy after each run and slowed the
    # BLAS search that follows the query encoding from 5 ms to 15 ms (measured).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not bf16:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": str(threads or os.cpu_count() or 1),
              "PERFORMANCE_HINT": "LATENCY"}
    options.add_provider_for_devices([_openvino_cpu()], {"load_config": json.dumps({"CPU": config})})
    return ort.InferenceSession(str(path), sess_options=options)
