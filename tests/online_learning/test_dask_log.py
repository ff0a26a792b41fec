"""Reading the event log on Dask gives the frames of the pandas path."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from online_learning.consumers.log_sink import log_files, read_log
from online_learning.retrain import impressions


def _ranking(request: str, when: str, user: str | None, products: list[str], team: str | None = None) -> list[dict]:
    base = {"event_id": f"e-{request}", "request_id": request, "timestamp": pd.Timestamp(when), "user_id": user,
            "session_id": None, "query": "garden hose", "searched": "garden hose", "key_id": None,
            "pipeline": "full", "models": "{}", "experiment": None, "arm": None, "degraded": "[]",
            "latency_ms": 12.5, "shown": len(products)}
    return [base | {"product_id": p, "position": i + 1, "score": 1.0 / (i + 1), "scores": json.dumps({"rrf": 0.1}),
                    "team": team} for i, p in enumerate(products)]


def _click(event: str, request: str, when: str, product: str, user: str | None) -> dict:
    return {"event_id": event, "type": "click", "request_id": request, "product_id": product, "position": 1,
            "timestamp": pd.Timestamp(when), "user_id": user, "session_id": None, "query": "garden hose"}


def _write(root: Path, kind: str, when: str, name: str, rows: list[dict]) -> None:
    stamp = pd.Timestamp(when)
    folder = root / kind / f"date={stamp:%Y-%m-%d}" / f"hour={stamp:%H}"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / f"{name}.parquet", index=False)


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    """Three days of rankings (one file all-None in `team` and `user_id`, one a re-delivered duplicate)."""
    root = tmp_path / "event_log"
    _write(root, "rankings", "2024-05-01T10:00Z", "a", _ranking("r1", "2024-05-01T10:00Z", None, ["P1", "P2"]))
    _write(root, "rankings", "2024-05-02T09:00Z", "b", _ranking("r2", "2024-05-02T09:00Z", "u1", ["P2", "P3"], "A")
           + _ranking("r3", "2024-05-02T09:30Z", "u2", ["P1", "P3", "P4"], "B"))
    _write(root, "rankings", "2024-05-02T09:00Z", "b-again", _ranking("r2", "2024-05-02T09:00Z", "u1", ["P2", "P3"], "A"))
    _write(root, "rankings", "2024-05-03T23:00Z", "c", _ranking("r4", "2024-05-03T23:00Z", "u1", ["P4", "P1"]))
    _write(root, "interactions", "2024-05-02T09:01Z", "i", [_click("c1", "r2", "2024-05-02T09:01Z", "P2", "u1"),
                                                            _click("c2", "r3", "2024-05-02T09:31Z", "P1", "u2")])
    return root


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, ignore_index=True)


def test_days_outside_the_window_are_skipped(log: Path) -> None:
    assert len(log_files(log, "rankings")) == 4
    since, until = pd.Timestamp("2024-05-02T05:00Z"), pd.Timestamp("2024-05-02T23:59Z")
    assert [f.stem for f in log_files(log, "rankings", since, until)] == ["b-again", "b"]  # path order
    assert len(log_files(log, "rankings", pd.Timestamp("2024-05-03"))) == 1  # a naive time is UTC
    with pytest.raises(ValueError, match="'clicks' is not one of"):
        log_files(log, "clicks")


def test_dask_reads_the_frames_of_the_pandas_path(log: Path, dask_local_client) -> None:  # type: ignore[no-untyped-def]
    for kind, keys in (("rankings", ["event_id", "position"]), ("interactions", ["event_id"])):
        expected = read_log(log, kind)
        got = read_log(log, kind, client=dask_local_client)
        assert len(expected) == (9 if kind == "rankings" else 2)  # the duplicate file is dropped
        pd.testing.assert_frame_equal(_sorted(got, keys), _sorted(expected, keys))
    since = pd.Timestamp("2024-05-02T00:00Z")
    expected = read_log(log, "rankings", ["query", "product_id"], since=since)
    got = read_log(log, "rankings", ["query", "product_id"], since=since, client=dask_local_client)
    assert list(got.columns) == ["event_id", "position", "query", "product_id"] and len(got) == 7
    pd.testing.assert_frame_equal(_sorted(got, ["event_id", "position"]), _sorted(expected, ["event_id", "position"]))


def test_retrain_impressions_are_the_same_on_dask(log: Path, dask_local_client) -> None:  # type: ignore[no-untyped-def]
    since = pd.Timestamp("2024-05-01T12:00Z")
    expected, _ = impressions(log, since, None, filters=None)
    got, _ = impressions(log, since, None, filters=None, client=dask_local_client)
    assert sorted(expected["request_id"].unique()) == ["r2", "r3", "r4"]
    assert expected["clicked"].sum() == 2
    pd.testing.assert_frame_equal(got, expected)
