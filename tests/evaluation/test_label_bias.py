"""benchmarks/query_analyzer.py: how often relevant judged titles hold a query's words, by kind of word."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.query_analyzer import words_in_relevant_titles
from evaluation.dataset import load_dataset
from retrieval.analyzer import Analyzer
from retrieval.vocabulary import Vocabulary


def test_corrected_words_are_counted_apart_from_the_words_typed_right(tmp_path: Path) -> None:
    titles = ["Ryobi Cordless Drill", "DEWALT Cordless Drill", "Ryobi Battery Charger", "Makita Drill Bit Set",
              "Garden Hose Nozzle", "Brass Hose Nozzle"] * 2
    pd.DataFrame({"product_id": [f"p{i}" for i in range(len(titles))], "title": titles}).to_csv(
        tmp_path / "products.csv", index=False)
    pd.DataFrame({"query_id": ["q1", "q2"], "query": ["cordless drill", "ryobi cordles"], "split": "dev"}).to_csv(
        tmp_path / "queries.csv", index=False)
    # q1's relevant products both hold both words; q2 ("cordles" -> "cordless"): one relevant title in two holds it
    pd.DataFrame({"query_id": ["q1", "q1", "q2", "q2", "q2"], "product_id": ["p0", "p1", "p0", "p2", "p4"],
                  "grade": [3, 3, 3, 3, 0]}).to_csv(tmp_path / "judgments.csv", index=False)
    dataset = load_dataset(tmp_path)
    vocabulary = Vocabulary.build(titles)
    analyzer = Analyzer(vocabulary)
    texts = dict(dataset.select("dev"))
    analyses = {qid: analyzer.analyze(text) for qid, text in texts.items()}
    assert analyses["q2"].text == "ryobi cordless"
    shares = words_in_relevant_titles(dataset, texts, analyses, vocabulary)
    assert shares["correct_queries"] == {"words": 2, "share_of_relevant_titles": 1.0}
    assert shares["misspelled_queries_known_words"] == {"words": 1, "share_of_relevant_titles": 1.0}
    assert shares["misspelled_queries_corrected_words"] == {"words": 1, "share_of_relevant_titles": 0.5}
