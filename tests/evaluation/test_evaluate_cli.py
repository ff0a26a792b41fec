"""`shoprank evaluate --subset / --compare` end to end on the generated demo store (real encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.subsets import SUBSETS
from shoprank.cli import build_parser, main
from tests.helpers import run_cli

METRICS = {"ndcg@10", "mrr@10", "recall@100", "recall@1000", "ndcg@10_unjudged_as_0", "judged@10"}
COMPARISON_KEYS = {"mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "better", "worse", "ties"}




def test_compare_bm25_with_hybrid_json(env_home: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("evaluate", "--dataset", str(demo_dir), "--mode", "retrieval")
    code, out, err = run_cli(capsys, *base, "--pipeline", "bm25", "--compare", "hybrid", "--subset", "all", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload) == {"first", "second", "comparison", "subset", "queries"}
    assert payload["subset"] == "all" and payload["first"]["pipeline"] == "bm25"
    assert payload["second"]["pipeline"] == "hybrid"
    assert payload["queries"] == payload["first"]["queries"] == payload["second"]["queries"] > 0
    assert set(payload["comparison"]) == METRICS
    for metric, figures in payload["comparison"].items():
        assert set(figures) == COMPARISON_KEYS
        assert figures["ci_low"] <= figures["diff"] <= figures["ci_high"], metric
        assert 0 <= figures["p_value"] <= 1
        assert figures["mean_a"] == payload["first"][metric] and figures["mean_b"] == payload["second"][metric]
        assert figures["diff"] == pytest.approx(figures["mean_b"] - figures["mean_a"], abs=2e-4)
        n = figures["better"] + figures["worse"] + figures["ties"]
        assert n == (payload["first"]["recall_queries"] if metric.startswith("recall") else payload["queries"])

    # each side's figures are the single run's figures (the harness output is unchanged but for "subset")
    code, out, _ = run_cli(capsys, *base, "--pipeline", "bm25", "--json")
    single = json.loads(out)
    assert code == 0 and single["subset"] == "all"
    single.pop("latency_ms")
    assert single == {k: v for k, v in payload["first"].items() if k != "latency_ms"}

    # the two subsets partition the queries
    counts = {}
    for subset in ("misspelled", "correct"):
        code, out, err = run_cli(capsys, *base, "--pipeline", "bm25", "--subset", subset, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["subset"] == subset
        counts[subset] = result["queries"] + result["skipped"]
    assert counts["misspelled"] + counts["correct"] == single["queries"] + single["skipped"]


def test_compare_readable_and_bad_input(env_home: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("evaluate", "--dataset", str(demo_dir), "--mode", "rerank", "--split", "dev", "--limit", "10")
    code, out, err = run_cli(capsys, *base, "--pipeline", "bm25", "--compare", "dense")
    assert code == 0, err
    assert "first: bm25" in out and "second: dense" in out and "comparison: dense - bm25 on" in out
    rows = {line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in METRICS}
    assert rows == {"ndcg@10", "mrr@10"}  # rerank mode: the rerank metrics only

    code, _, err = run_cli(capsys, *base, "--pipeline", "hybrid", "--compare", "hybrid")
    assert code == 2 and "error: --compare 'hybrid' names the same pipeline as --pipeline" in err
    code, _, err = run_cli(capsys, *base, "--pipeline", "bm25", "--compare", "nope")
    assert code == 2 and "pipeline 'nope' is not one of" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--subset", "typos"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'typos'" in capsys.readouterr().err


def test_subset_choices_are_the_harness_subsets() -> None:
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]  # type: ignore[union-attr]
    subset = next(a for a in evaluate._actions if a.dest == "subset")
    assert tuple(subset.choices) == SUBSETS and subset.default == "all"


def test_saved_runs_compare_like_compare(env_home: Path, demo_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs saved with --save (here two pipelines; in use, one pipeline under two settings or
    encoders) compare to the same figures as --compare."""
    base = ("evaluate", "--dataset", str(demo_dir), "--mode", "retrieval", "--json")
    code, out, err = run_cli(capsys, *base, "--pipeline", "bm25", "--compare", "hybrid")
    assert code == 0, err
    together = json.loads(out)
    for name in ("bm25", "hybrid"):
        code, _, err = run_cli(capsys, *base, "--pipeline", name, "--save", str(tmp_path / f"{name}.json"))
        assert code == 0, err
    code, out, err = run_cli(capsys, "compare", str(tmp_path / "bm25.json"), str(tmp_path / "hybrid.json"), "--json")
    assert code == 0, err
    apart = json.loads(out)
    assert apart["comparison"] == together["comparison"] and apart["queries"] == together["queries"]

    code, out, err = run_cli(capsys, "compare", str(tmp_path / "bm25.json"), str(tmp_path / "hybrid.json"))
    assert code == 0 and "comparison: hybrid - bm25 on" in out
    (tmp_path / "broken.json").write_text("{}")
    code, _, err = run_cli(capsys, "compare", str(tmp_path / "bm25.json"), str(tmp_path / "broken.json"))
    assert code == 2 and "broken.json is not a result saved by 'shoprank evaluate --save'" in err
    code, _, err = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--mode", "rerank", "--pipeline", "bm25",
                           "--save", str(tmp_path / "rerank.json"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "compare", str(tmp_path / "bm25.json"), str(tmp_path / "rerank.json"))
    assert code == 2 and "a paired comparison needs both results on the same queries" in err


def test_typos_measure_a_slip_on_the_same_queries(env_home: Path, demo_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--typos searches the queries typed with a slip; saved, it pairs with the run as typed."""
    base = ("evaluate", "--dataset", str(demo_dir), "--mode", "retrieval", "--pipeline", "bm25", "--subset", "correct")
    code, _, err = run_cli(capsys, *base, "--save", str(tmp_path / "typed.json"))
    assert code == 0, err
    code, out, err = run_cli(capsys, *base, "--typos", "--json", "--save", str(tmp_path / "slipped.json"))
    assert code == 0, err
    slipped = json.loads(out)
    typed = json.loads((tmp_path / "typed.json").read_text())["result"]
    assert "typos" not in typed and slipped["typos"]["slipped"] > 0
    assert slipped["typos"]["slipped"] + slipped["typos"]["left_out"] == typed["queries"] + typed["skipped"]
    code, out, err = run_cli(capsys, "compare", str(tmp_path / "typed.json"), str(tmp_path / "slipped.json"), "--json")
    assert code == 0, err
    assert json.loads(out)["queries"] == slipped["queries"]  # paired on the queries that slipped


def test_two_saved_runs_of_one_file_name_are_told_apart(cli_home: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """a/bm25.json and b/bm25.json (one pipeline, two settings) had both columns named 'bm25'."""
    from evaluation.harness import EvalResult

    def run(values: list[float]) -> EvalResult:
        return EvalResult(dataset="d", mode="retrieval", pipeline="bm25", split=None, queries=2, skipped=0,
                          metrics={"ndcg@10": sum(values) / 2}, latency_ms={},
                          per_query={"ndcg@10": dict(zip(("q1", "q2"), values))})

    run([0.5, 1.0]).save(tmp_path / "a" / "bm25.json")
    run([0.25, 1.0]).save(tmp_path / "b" / "bm25.json")
    code, out, err = run_cli(capsys, "compare", str(tmp_path / "a" / "bm25.json"), str(tmp_path / "b" / "bm25.json"))
    assert code == 0, err
    assert "first: a/bm25\n" in out and "second: b/bm25\n" in out and "comparison: b/bm25 - a/bm25 on 2" in out
    run([0.5, 1.0]).save(tmp_path / "c" / "bm25.json", label="bm25 deep")
    code, out, err = run_cli(capsys, "compare", str(tmp_path / "a" / "bm25.json"), str(tmp_path / "c" / "bm25.json"))
    assert code == 0 and "comparison: bm25 deep - bm25 on 2" in out


def test_a_depth_past_what_the_metrics_read_is_refused(cli_home: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--depth 10000000000 had aborted the process: tantivy sets aside 16 bytes a result asked for."""
    with pytest.raises(SystemExit):
        main(["evaluate", "--dataset", str(tmp_path), "--mode", "retrieval", "--depth", "10000000000"])
    assert ("argument --depth: '10000000000' is more than 100000: pass a depth from 100 to 100000"
            in capsys.readouterr().err)
