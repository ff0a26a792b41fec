"""The bf16 path without its plugin fails with what to do, before any model is read."""

from __future__ import annotations

from pathlib import Path

import pytest

import core.onnx_sessions as sessions


def test_bf16_without_the_plugin_names_the_package_and_the_setting(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(sessions, "_device", None)
    monkeypatch.setattr(sessions, "bf16_available", lambda: False)
    with pytest.raises(RuntimeError) as raised:
        sessions.cpu_session(tmp_path / "absent.onnx", threads=1, bf16=True)
    assert "onnxruntime-ep-openvino" in str(raised.value) and "ranking.precision" in str(raised.value)


def test_a_machine_the_plugin_does_not_serve_gets_the_same_clear_error_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin is registered once per process: asked again (a second model, a second encoder), the
    answer is still what to do, not ONNX Runtime's refusal to register it twice."""
    import onnxruntime as ort

    monkeypatch.setattr(sessions, "_device", None)
    monkeypatch.setattr(ort, "get_ep_devices", lambda: [])  # as on an AMD EPYC: no CPU device it serves
    for _ in range(2):
        with pytest.raises(RuntimeError, match="found no CPU device it runs on .*int8, fp32 or auto"):
            sessions._openvino_cpu()
    assert not sessions.bf16_runs()
