"""What query suggestions cost: building them from a catalog, and one ``suggest`` call per keystroke.

    python benchmarks/suggest.py --dataset ../shared/data/homedepot [--queries 500] [--searched FILE]

Builds the catalog's phrases and the suggester as a server does (``serving.suggestions``; with
``--searched``, the shoppers' texts that ``shoprank suggestions`` wrote), then types the first
``--queries`` dev queries one character at a time and times each call as served (k = 8; the
words before the last one read by the catalog's query analyzer, with its cache). Reports how
often the query's own first word is offered once its first three characters are typed, a
rough check that suggestions lead somewhere useful. Prints JSON with the CPU and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from retrieval.analyzer import Analyzer  # noqa: E402
from retrieval.suggest import Suggester, catalog_phrases, suggest  # noqa: E402
from retrieval.vocabulary import TOKEN, Vocabulary, normalize  # noqa: E402
from serving.suggestions import read_searched  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--searched", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    started = time.perf_counter()
    phrases = catalog_phrases(dataset.products["title"].tolist())
    phrases_s = time.perf_counter() - started
    searched = read_searched(args.searched) if args.searched else {}
    started = time.perf_counter()
    suggester = Suggester(phrases, searched)
    build_s = time.perf_counter() - started
    products = dataset.products
    analyzer = Analyzer(Vocabulary.build(products["title"].tolist(), products["description"].tolist()))
    texts = [t for _, t in dataset.select(args.split)][: args.queries]
    seconds, offered, empty = [], 0, 0
    for text in texts:
        for end in range(1, len(text) + 1):
            started = time.perf_counter()
            found = suggest(suggester, analyzer, text[:end], 8)
            seconds.append(time.perf_counter() - started)
            empty += not found
        words = TOKEN.findall(normalize(text))
        if words and len(words[0]) >= 3:
            offered += any(s.text.split()[0] == words[0] for s in suggester.suggest(words[0][:3], 8))
    print(json.dumps({
        "hardware": hardware(), "command": " ".join(sys.argv), "products": len(dataset.products),
        "catalog_phrases": len(phrases), "searched_texts": len(searched), "keys": len(suggester.keys),
        "seconds": {"catalog_phrases": round(phrases_s, 2), "suggester": round(build_s, 2)},
        "calls": len(seconds), "calls_with_no_suggestion": round(empty / max(1, len(seconds)), 4),
        "first_word_offered_after_3_chars": round(offered / max(1, len(texts)), 4),
        "ms_per_call": percentiles(seconds),
        "examples": {q: [s.text for s in suggester.suggest(q, 5)] for q in ("cord", "ceiling f", "bosch", "pvc p")},
    }, indent=2))


if __name__ == "__main__":
    main()
