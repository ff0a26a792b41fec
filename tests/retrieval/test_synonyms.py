"""A store's synonyms: the file format, and the analyzer applying them before spelling correction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidInput, NotFound
from core.settings import Settings
from retrieval.analyzer import Analyzer
from retrieval.embedding_cache import EmbeddingCache
from retrieval.index import ProductIndex
from retrieval.synonyms import Synonyms, file_digest
from retrieval.vocabulary import Vocabulary
from tests.fakes import HashingEncoder

TITLES = ["Frigidaire Top Freezer Refrigerator", "LG French Door Refrigerator", "Dyson Cordless Stick Vacuum",
          "Shark Upright Vacuum", "Husky 1/2 in. Drive Socket Set", "Melnor Brass Garden Hose Nozzle"] * 2

RULES = """
# equivalent words, then one way
fridge, refrigerator, icebox
aspiradora, vacuum cleaner => vacuum
half inch socket => 1/2 in socket   # normalized as queries are
hoover => stik                      # a word the catalog lacks, one edit from its "stick"
"""


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(Vocabulary.build(TITLES), synonyms=Synonyms.parse(RULES.splitlines()))


@pytest.mark.parametrize("typed, searched, rewrite", [
    ("Fridge", "fridge refrigerator icebox", ("fridge", "fridge refrigerator icebox")),
    ("aspiradora", "vacuum", ("aspiradora", "vacuum")),  # not "corrected" to some catalog word first
    ("dyson vacuum cleaner", "dyson vacuum", ("vacuum cleaner", "vacuum")),  # the longest entry wins
    ("Half Inch Socket", "1/2 in socket", ("half inch socket", "1/2 in socket")),
    ("fridge icebox fridge", "fridge refrigerator icebox", ("fridge", "fridge refrigerator icebox")),  # once
])
def test_rules_rewrite_the_words_they_name(analyzer: Analyzer, typed: str, searched: str,
                                           rewrite: tuple[str, str]) -> None:
    analysis = analyzer.analyze(typed)
    assert analysis.text == searched
    assert [(r.original, r.replacement, r.reason) for r in analysis.rewrites] == [(*rewrite, "synonym")]


def test_the_words_a_rule_puts_in_are_never_corrected_and_the_others_still_are(analyzer: Analyzer) -> None:
    assert analyzer.analyze("stik").text == "stick"
    analysis = analyzer.analyze("hoover nozzel")
    assert analysis.text == "stik nozzle"
    assert [r.reason for r in analysis.rewrites] == ["synonym", "spelling"]


def test_rewrite_off_searches_the_words_as_typed(analyzer: Analyzer) -> None:
    assert analyzer.analyze("aspiradora", rewrite=False).text == "aspiradora"


@pytest.mark.parametrize("line, why", [
    ("a => b => c", "more than one '=>'"), ("=> vacuum", "is not a rule"), ("vacuum =>", "is not a rule"),
    ("fridge", "is not a rule"), ("fridge, , icebox", "is not a rule"),
])
def test_a_malformed_line_is_an_error_naming_it_and_the_allowed_forms(line: str, why: str) -> None:
    with pytest.raises(InvalidInput) as error:
        Synonyms.parse(["# fine", "a, b", line], "store.txt")
    assert f"store.txt line 3: {line!r}" in str(error.value) and why in str(error.value)
    assert "'a, b, c' (equivalent words) or 'a, b => c'" in str(error.value)


def test_an_entry_on_several_lines_searches_what_each_gives() -> None:
    rules = Synonyms.parse(["tv, television", "tv, monitor", "telly => tv", "telly, goggle box"]).rules
    assert rules[("tv",)] == ("tv", "television", "monitor")  # before: the last line's alone (tv, monitor)
    assert rules[("television",)] == ("tv", "television") and rules[("monitor",)] == ("tv", "monitor")
    assert rules[("telly",)] == ("tv", "telly", "goggle", "box")


def test_a_file_is_read_once_for_its_rules_and_its_digest_and_must_be_utf8(tmp_path: Path) -> None:
    rules = tmp_path / "store.txt"
    rules.write_text("fridge, refrigerator\n", encoding="utf-8")
    synonyms, digest = Synonyms.read(rules)
    assert digest == file_digest(rules) and synonyms.rules[("fridge",)] == ("fridge", "refrigerator")
    rules.write_bytes("aspiradora, vacuum\n".encode("latin-1") + b"\xe9pingle => pin\n")
    with pytest.raises(InvalidInput, match=r"store.txt is not UTF-8 text \(byte 19\); save it as UTF-8"):
        Synonyms.read(rules)


def small_index(tmp_path: Path, settings: Settings) -> Path:
    """A two-product index and a synonyms file beside it (``fridge, refrigerator``); the file's path."""
    products = pd.DataFrame({"product_id": ["a", "b"], "title": ["Top Freezer Refrigerator", "Stick Vacuum"],
                             "description": ["", ""]})
    encoder = HashingEncoder()
    ProductIndex.build(tmp_path / "index", products, encoder, settings.retrieval,
                       EmbeddingCache(tmp_path / "c.sqlite", encoder.dim), progress=False)
    rules = tmp_path / "synonyms.txt"
    rules.write_text("fridge, refrigerator\n")
    return rules


def test_the_index_applies_the_file_that_retrieval_synonyms_names(tmp_path: Path, settings: Settings) -> None:
    rules = small_index(tmp_path, settings)
    with_rules = settings.retrieval.model_copy(update={"synonyms": str(rules)})
    assert ProductIndex.load(tmp_path / "index", with_rules).analyzer.analyze("fridge").text == "fridge refrigerator"
    assert ProductIndex.load(tmp_path / "index", settings.retrieval).analyzer.analyze("fridge").text == "fridge"
    missing = settings.retrieval.model_copy(update={"synonyms": str(tmp_path / "none.txt")})
    with pytest.raises(NotFound, match="none.txt does not exist"):
        ProductIndex.load(tmp_path / "index", missing).analyzer


def test_a_relative_synonyms_path_is_each_stores_own_file(tmp_path: Path) -> None:
    from serving.indexing import retrieval_settings

    settings = Settings(home=tmp_path, progress=False, retrieval={"synonyms": "synonyms.txt"})
    assert retrieval_settings(settings).synonyms == str(tmp_path / "synonyms.txt")
    assert retrieval_settings(settings.for_store("garden")).synonyms == str(tmp_path / "stores/garden/synonyms.txt")
    shared = Settings(home=tmp_path, progress=False, retrieval={"synonyms": "/etc/shoprank/synonyms.txt"})
    assert retrieval_settings(shared.for_store("garden")).synonyms == "/etc/shoprank/synonyms.txt"


def test_with_spelling_off_the_synonyms_still_apply(analyzer: Analyzer) -> None:
    analysis = analyzer.analyze("aspiradora nozzel", spelling=False)
    assert analysis.text == "vacuum nozzel" and [r.reason for r in analysis.rewrites] == ["synonym"]


def test_an_edited_file_is_read_again_and_a_broken_one_keeps_the_old_rules(tmp_path: Path, settings: Settings) -> None:
    rules = small_index(tmp_path, settings)
    index = ProductIndex.load(tmp_path / "index", settings.retrieval.model_copy(update={"synonyms": str(rules)}))
    assert index.analyzer.analyze("fridge").text == "fridge refrigerator" and not index.refresh_synonyms()
    rules.write_text("fridge => refrigerator\nhoover => vacuum\n")
    assert index.refresh_synonyms() and index.analyzer.analyze("fridge").text == "refrigerator"
    assert index.analyzer.analyze("hoover").text == "vacuum"
    rules.write_text("hoover =>\n")
    with pytest.raises(InvalidInput, match="line 1"):
        index.refresh_synonyms()
    assert index.analyzer.analyze("hoover").text == "vacuum"  # the rules read last still serve
    rules.write_text("hoover => stick vacuum\n")
    assert index.refresh_synonyms() and index.analyzer.analyze("hoover").text == "stick vacuum"


def test_an_edited_file_changes_the_served_state_every_server_process_polls(tmp_path: Path) -> None:
    from serving.loading import generation

    settings = Settings(home=tmp_path, progress=False, retrieval={"synonyms": "synonyms.txt"})
    (tmp_path / "synonyms.txt").write_text("fridge, refrigerator\n")
    before = generation(settings)
    assert generation(settings) == before
    (tmp_path / "synonyms.txt").write_text("fridge => refrigerator\n")
    assert generation(settings) != before
