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
