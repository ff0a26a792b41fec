"""Suggestions from the shoppers' searches: counted from the event log, written nightly, read when changed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.settings import get_settings
from online_learning.analysis import searched_texts
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import RANKINGS_TOPIC, RankingEvent, ShownItem
from retrieval.index import ProductIndex
from serving.suggestions import hidden_products, suggest, suggester, write_searched
from tests.helpers import run_cli

NOW = datetime.now(UTC)


def search(n: int, typed: str, searched: str, user: str | None, session: str | None = None, shown: int = 2,
           days_ago: float = 1) -> Delivered:
    event = RankingEvent(event_id=f"r{n}", request_id=f"r{n}", timestamp=NOW - timedelta(days=days_ago),
                         user_id=user, session_id=session, query=typed, searched=searched, pipeline="full",
                         items=[ShownItem(product_id=f"P{j}", position=j + 1) for j in range(shown)])
    return Delivered(RANKINGS_TOPIC, 0, n, event)


def write_log(root: Path) -> None:
    logged = [search(i, "Cordless Drill", "cordless drill", f"u{i}") for i in range(4)]
    logged.append(search(4, "cordles drill", "cordless drill", "u9"))  # corrected: counted as what was searched
    logged += [search(10 + i, "john smith 555 0100", "john smith 555 0100", "u1") for i in range(10)]  # one shopper
    logged += [search(30 + i, "xyzzy", "xyzzy", f"u{i}", shown=0) for i in range(5)]  # found nothing
    logged += [search(40 + i, "paint roller", "paint roller", None, f"s{i}") for i in range(3)]  # sessions
    logged += [search(60 + i, "my address 12", "my address 12", None) for i in range(4)]  # anonymous: one shopper
    imported = ["Ｇａｒｄｅｎ ＨＯＳＥ", "garden  hose", "Garden Hose"]  # events without the analyzer's text
    logged += [search(70 + i, text, None, f"w{i}") for i, text in enumerate(imported)]
    logged += [search(50 + i, "snow blower", "snow blower", f"u{i}", days_ago=200) for i in range(5)]  # too old
    ParquetLogSink(root)(logged)


def eventually(read, done, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    """``read()`` once ``done`` holds of it (made in the background), within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value}"
        time.sleep(0.02)
    return value


def test_searched_texts_count_distinct_shoppers_of_searches_that_found_something(tmp_path: Path) -> None:
    write_log(tmp_path / "log")
    since = NOW - timedelta(days=90)
    assert searched_texts(tmp_path / "log", 3, pd.Timestamp(since)) == {"cordless drill": 5, "garden hose": 3,
                                                                        "paint roller": 3}
    assert searched_texts(tmp_path / "log", 5, pd.Timestamp(since)) == {"cordless drill": 5}
    assert "snow blower" in searched_texts(tmp_path / "log", 3)
    assert searched_texts(tmp_path / "nothing", 3) == {}


def test_the_nightly_file_is_read_when_it_changes(tmp_path: Path, fake_index: ProductIndex,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    path = get_settings().paths.suggestions
    before = suggester(fake_index, path).suggest("paint", 5)
    assert before and {s.source for s in before} == {"catalog"} and before[0].text == "paint"
    write_log(get_settings().paths.event_log)
    code, out, err = run_cli(capsys, "suggestions", "--min-shoppers", "3", "--days", "90")
    assert code == 0, err
    assert json.loads(out)["texts"] == 3
    assert json.loads(path.read_text())["searches"] == {"cordless drill": 5, "garden hose": 3, "paint roller": 3}
    assert suggester(fake_index, path).suggest("paint", 1)[0].source == "catalog"  # answers at once, as before
    after = eventually(lambda: suggester(fake_index, path).suggest("paint", 5), lambda f: f[0].source == "searches")
    assert (after[0].text, after[0].source, after[0].weight) == ("paint roller", "searches", 3)
    assert suggester(fake_index, path) is suggester(fake_index, path)  # kept while nothing changes
    write_searched(path, {"paint sprayer": 7})
    assert suggester(fake_index, path, wait=True).suggest("paint", 1)[0].text == "paint sprayer"
    code, _, err = run_cli(capsys, "suggestions", "--min-shoppers", "0")
    assert code == 2 and "--min-shoppers 0" in err
    get_settings.cache_clear()


def test_the_words_before_the_last_are_read_as_a_search_reads_them(tmp_path: Path,
                                                                   fake_index: ProductIndex) -> None:
    path = tmp_path / "searches.json"
    assert [s.text for s in suggester(fake_index, path).suggest("cordles dri", 5)][0] == "cordles drill"  # as typed
    found = [s.text for s in suggest(fake_index, path, "cordles dri", 5)]
    assert found and all(t.startswith("cordless dri") for t in found)
    assert [s.text for s in suggest(fake_index, path, "cordles ", 3)][0].startswith("cordless ")
    assert suggest(fake_index, path, "?", 3) == [] and suggest(fake_index, path, "zzqx", 3) == []
    assert suggester(fake_index, path).suggest("cordlss", 3) == []  # a typo in the last word matches nothing ...
    assert [s.text for s in suggest(fake_index, path, "cordlss", 3)][0].startswith("cordless")  # ... read whole
    plural = [s.text for s in suggest(fake_index, path, "drills", 3)]  # no phrase of the plural: the singular's
    assert plural and all("drill" in t for t in plural), plural


def test_searched_texts_that_name_only_hidden_products_are_not_offered(tmp_path: Path,
                                                                       fake_index: ProductIndex) -> None:
    products = fake_index.live_products()
    target = products.iloc[0]
    own = " ".join(str(target["title"]).split()[:3])  # the start of one product's title, as shoppers search it
    shared = "paint"  # a word many products' titles hold
    path = tmp_path / "searches.json"
    write_searched(path, {own.lower(): 9, shared: 5})
    texts = {s.text for s in suggest(fake_index, path, own[:2], 20)} | {s.text for s in suggest(fake_index, path,
                                                                                                 "pai", 20)}
    named = {t for t in texts if t in (normalize_text(own), shared)}
    assert named == {normalize_text(own), shared}
    others = products.loc[products["title"].map(lambda t: set(words_of(own)) <= set(words_of(t)))]
    hidden = frozenset(others["product_id"])  # every product whose title holds the searched words
    searched = suggester(fake_index, path, wait=True, hidden=hidden)
    offered = {s.text for s in searched.suggest(normalize_text(own)[:4], 20)} | {s.text for s in
                                                                                 searched.suggest("pai", 20)}
    assert normalize_text(own) not in offered and shared in offered
    if len(hidden) > 1:  # one of them visible again: the text names a product shoppers can find
        again = suggester(fake_index, path, wait=True, hidden=hidden - {target["product_id"]})
        assert normalize_text(own) in {s.text for s in again.suggest(normalize_text(own)[:4], 20)}
    elsewhere = suggester(fake_index, path, wait=True, hidden=frozenset(products["product_id"][1:2]))
    assert shared in {s.text for s in elsewhere.suggest("pai", 20)}


def test_searched_texts_that_name_only_deleted_products_are_not_offered(tmp_path: Path,
                                                                        fake_index: ProductIndex) -> None:
    """A deleted product is found by no search, as a hidden one is not (before: its name was still offered)."""
    products = fake_index.live_products()
    own = normalize_text(" ".join(str(products.iloc[0]["title"]).split()[:3]))
    path = tmp_path / "searches.json"
    write_searched(path, {own: 9, "paint": 5})
    assert own in {s.text for s in suggester(fake_index, path, wait=True).suggest(own[:4], 20)}
    holders = products.loc[products["title"].map(lambda t: set(words_of(own)) <= set(words_of(t))), "product_id"]
    assert fake_index.delete(holders.tolist())[0] == len(holders)
    offered = suggester(fake_index, path, wait=True)
    assert own not in {s.text for s in offered.suggest(own[:4], 20)} and "paint" in {
        s.text for s in offered.suggest("pai", 20)}


def test_with_out_of_stock_hide_the_products_out_of_stock_are_hidden_from_the_suggestions(
        fake_index: ProductIndex) -> None:
    """What a search hides, as the product facts were last built: a stock change (a new build of the facts) is
    another set, so the suggester is made again (before: only the rules' own hide list)."""
    from ranking.rules import RulesConfig

    ids = fake_index.products["product_id"].tolist()
    stocked = np.ones(len(ids), dtype=bool)
    stocked[:3] = False

    class Facts:  # a build of the product facts (ranking.facts.CatalogFacts)
        version = 1

        def table(self) -> SimpleNamespace:
            return SimpleNamespace(stocked=stocked.copy())

    facts = Facts()
    engine = SimpleNamespace(index=fake_index, facts=facts, rules=SimpleNamespace(
        config=RulesConfig(out_of_stock="hide", hide=[ids[5]])))
    assert hidden_products(engine) == frozenset(ids[:3]) | {ids[5]}  # type: ignore[arg-type]
    stocked[0], stocked[4], facts.version = True, False, 2  # a stock change: built again
    assert hidden_products(engine) == {ids[1], ids[2], ids[4], ids[5]}  # type: ignore[arg-type]
    engine.rules.config = RulesConfig(out_of_stock="demote", hide=[ids[5]])
    assert hidden_products(engine) == {ids[5]}  # type: ignore[arg-type]
    assert hidden_products(SimpleNamespace(rules=None)) == frozenset()  # type: ignore[arg-type]


def normalize_text(text: str) -> str:
    from retrieval.vocabulary import normalize

    return " ".join(normalize(text).split())


def words_of(text: str) -> list[str]:
    from retrieval.suggest import JOINING
    from retrieval.vocabulary import TOKEN, normalize

    return [w for w in TOKEN.findall(normalize(text)) if w not in JOINING]


@pytest.mark.parametrize("text", ['{"texts": 1}', "{not json", '{"searches": {"drill": "many"}}', "[1, 2]"])
def test_an_unreadable_searched_file_leaves_the_catalog_phrases(tmp_path: Path, fake_index: ProductIndex,
                                                                text: str) -> None:
    path = tmp_path / "bad-searches.json"
    path.write_text(text)
    found = suggester(fake_index, path, wait=True).suggest("dri", 5)  # the first build, as at a server's start
    assert found and all(s.source == "catalog" for s in found)


def test_suggestions_keep_the_words_typed_no_synonym_added_and_none_corrected_with_spelling_off(
        tmp_path: Path, settings, demo_products: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    from retrieval.embedding_cache import EmbeddingCache
    from tests.fakes import HashingEncoder

    (tmp_path / "synonyms.txt").write_text("fridge, refrigerator\npint, 16 fl oz\ntaladro => drill\n")
    retrieval = settings.retrieval.model_copy(update={"synonyms": str(tmp_path / "synonyms.txt")})
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    path = tmp_path / "searches.json"
    assert index.analyzer.analyze("fridge").text != "fridge"  # a search reads the equivalent words too
    for typed in ("fridge sa", "refrigerator sa"):  # before: 'fridge refrigerator samsung', for both
        found = [s.text for s in suggest(index, path, typed, 3)]
        assert found and all(t.startswith(typed) for t in found), (typed, found)
    # a word of an equivalent set is still a store's own word: never corrected (pint is one edit from paint)
    assert all(not t.startswith("paint") for t in (s.text for s in suggest(index, path, "pint b", 3)))
    off = [s.text for s in suggest(index, path, "cordles dri", 5, spelling=False)]  # retrieval.spelling off
    assert all(t.startswith("cordles dri") for t in off) and suggest(index, path, "cordlss", 3, spelling=False) == []
    for spelling in (True, False):  # a one-way rule applies as in a search, with or without spelling
        assert [s.text for s in suggest(index, path, "taladro", 3, spelling=spelling)][0].startswith("drill")
