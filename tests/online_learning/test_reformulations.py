"""What shoppers searched next when a search failed them (``shoprank report reformulations``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import get_settings
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import InteractionEvent, RankingEvent, ShownItem
from online_learning.reformulations import (
    BROADENED,
    NARROWED,
    REPLACED,
    SPELLING,
    SPLIT,
    reformulations,
    relation,
)
from retrieval.synonyms import Synonyms
from tests.helpers import run_cli

NOW = datetime.now(UTC) - timedelta(hours=1)


class Log:
    def __init__(self) -> None:
        self.events: list[Delivered] = []

    def search(self, who: str | None, typed: str, searched: str, at: float, click: bool, shown: int = 3,
               session: str | None = None) -> None:
        n = len(self.events)
        when = NOW + timedelta(seconds=at)
        self.events.append(Delivered("r", 0, n, RankingEvent(
            event_id=f"r{n}", request_id=f"r{n}", timestamp=when, user_id=who, session_id=session, query=typed,
            searched=searched, pipeline="full", items=[ShownItem(product_id=f"P{j}", position=j + 1)
                                                       for j in range(shown)])))
        if click:
            self.events.append(Delivered("i", 0, n + 1, InteractionEvent(
                type="click", event_id=f"c{n}", request_id=f"r{n}", timestamp=when + timedelta(seconds=5),
                user_id=who, session_id=session, product_id="P0", position=1)))


def test_failed_searches_followed_by_found_ones_are_counted_by_shoppers(tmp_path: Path) -> None:
    log = Log()
    for i in range(4):  # typed run together and misspelled; the analyzer searched it as typed
        log.search(f"u{i}", "BTUair condtioner", "btuair condtioner", 0, click=False)
        log.search(f"u{i}", "btu air conditioner", "btu air conditioner", 30, click=True)
    for i in range(3):  # nothing shown, then another word, within a session
        log.search(None, "romex", "romex", 0, click=False, shown=0, session=f"s{i}")
        log.search(None, "romex", "romex", 5, click=False, shown=0, session=f"s{i}")  # the same again: skipped
        log.search(None, "electrical wire", "electrical wire", 20, click=True, session=f"s{i}")
    log.search("u9", "ladder", "ladder", 0, click=False)  # one shopper: never listed
    log.search("u9", "step stool", "step stool", 10, click=True)
    for i in range(3):  # too far apart
        log.search(f"v{i}", "hose", "hose", 0, click=False)
        log.search(f"v{i}", "garden hose", "garden hose", 500, click=True)
    for _ in range(5):  # anonymous: no next search to tie it to
        log.search(None, "mulch", "mulch", 0, click=False)
        log.search(None, "red mulch", "red mulch", 10, click=True)
    for i in range(3):  # the first page failed, the second found it: the search did not fail
        log.search(f"w{i}", "drill", "drill", 0, click=False)
        log.search(f"w{i}", "drill", "drill", 8, click=True)
        log.search(f"w{i}", "cordless drill", "cordless drill", 20, click=True)
    ParquetLogSink(tmp_path / "log")(log.events)
    found = reformulations(tmp_path / "log", NOW - timedelta(days=1))
    assert [(r.before, r.after, r.shoppers, r.share, r.relation, r.rule) for r in found] == [
        ("btuair condtioner", "btu air conditioner", 4, 1.0, "other", None),
        ("romex", "electrical wire", 3, 1.0, REPLACED, "romex => electrical wire"),
    ]
    assert ("hose", "garden hose", NARROWED) in [(r.before, r.after, r.relation) for r in reformulations(
        tmp_path / "log", NOW - timedelta(days=1), window=600)]
    assert [r.before for r in reformulations(tmp_path / "log", NOW - timedelta(days=1), min_shoppers=1)] == [
        "btuair condtioner", "romex", "ladder"]


@pytest.mark.parametrize(("before", "after", "kind", "rule"), [
    ("btuair conditioner", "btu air conditioner", SPLIT, "btuair => btu air"),
    ("air condtioner", "air conditioner", SPELLING, "condtioner => conditioner"),
    ("12 2 romex", "12 2 nm b wire", REPLACED, "romex => nm b wire"),
    ("drill", "cordless drill", NARROWED, None),
    ("cordless drill bits", "drill bits", BROADENED, None),
    ("romex cable", "electrical wire", "other", None),
])
def test_how_two_texts_differ_and_the_rule_that_maps_them(before: str, after: str, kind: str, rule: str | None) -> None:
    assert relation(before, after) == (kind, rule)


def test_the_report_command_writes_html_and_a_synonyms_file_that_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    log = Log()
    for i in range(3):
        log.search(f"u{i}", "air condtioner", "air condtioner", 0, click=False, shown=0)
        log.search(f"u{i}", "air conditioner", "air conditioner", 15, click=True)
    home = tmp_path / "home"
    ParquetLogSink(home / "event_log")(log.events)
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "report", "reformulations", "--out", str(tmp_path / "r.html"),
                                 "--synonyms-out", str(tmp_path / "synonyms.txt"))
        assert code == 0, err
        assert json.loads(out)["reformulations"][0]["rule"] == "condtioner => conditioner"
        assert "condtioner =&gt; conditioner" in (tmp_path / "r.html").read_text()
        rules = Synonyms.parse((tmp_path / "synonyms.txt").read_text().splitlines())
        assert rules.apply(["air", "condtioner"])[0] == [("air", False), ("conditioner", True)]
        code, _, err = run_cli(capsys, "report", "reformulations", "--window-s", "0")
        assert code == 2 and "--window-s 0.0 in 1..3600" in err
    finally:
        get_settings.cache_clear()
