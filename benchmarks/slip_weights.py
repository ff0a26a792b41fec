"""The spelling corrector's channel weights (retrieval/slips.py): how each setting restores slips of two kinds.

    python benchmarks/slip_weights.py --dataset ../shared/data/homedepot [--split train] \
        [--unlikely 0.05,0.15,0.3,0.5,1] [--beside 0.3] [--phrases 3000] [--out FILE]

When a misspelled word has several catalog words one edit away, the corrector weighs each by how
likely its edit is as a typing slip: 1 for a likely slip, ``BESIDE`` for a neighbouring key hit
beside the right one, ``UNLIKELY`` for any other edit. Each setting of the two weights is scored on:

- **likely slips**: each correctly spelt query of the split (every word known to the catalog) typed
  with the slip ``shoprank evaluate --typos`` gives it (seeded by its id: a letter dropped, doubled,
  swapped or hit on a neighbouring key, or two words run together). Restored: its analysis equals
  the analysis of the query as spelt.
- **unlikely slips**: phrases of catalog titles (their first five words; ``--phrases`` titles drawn
  with a fixed seed) with one word of 5+ letters hit by an edit the channel calls unlikely: a key
  far from the right one, or the first letter changed, into a word the catalog lacks.

A lower ``UNLIKELY`` trusts likely slips more and restores fewer unlikely ones (``heavy duty miwer``
then reads ``mower``, not ``miter``). Prints JSON: CPU, command, and both shares per setting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import string
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command, hardware  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from evaluation.subsets import unknown_words  # noqa: E402
from evaluation.typos import slipped  # noqa: E402
from retrieval import slips  # noqa: E402
from retrieval.analyzer import Analyzer  # noqa: E402
from retrieval.vocabulary import Vocabulary, tokenize  # noqa: E402

PHRASE_WORDS = 5


def unlikely_slip(word: str, rng: random.Random) -> str:
    """``word`` with one edit :func:`retrieval.slips.slip_weight` calls unlikely: the first letter
    changed, or a later letter replaced by a key that is not its neighbour."""
    i = rng.randrange(len(word))
    far = [c for c in string.ascii_lowercase if c != word[i] and (i == 0 or c not in slips.NEIGHBOURS[word[i]])]
    return word[:i] + rng.choice(far) + word[i + 1:]


def unlikely_pairs(titles: list[str], vocabulary: Vocabulary, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(typed, as spelt) title phrases, each with one word of 5+ letters slipped unlikely into an unknown word."""
    rng = random.Random(seed)
    pairs = []
    for title in rng.sample(titles, min(count, len(titles))):
        words = tokenize(title)[:PHRASE_WORDS]
        slippable = [i for i, w in enumerate(words) if w.isalpha() and w.isascii() and len(w) >= 5]
        if not slippable:
            continue
        i = rng.choice(slippable)
        typed = unlikely_slip(words[i], rng)
        if not vocabulary.knows(typed):
            pairs.append((" ".join(words[:i] + [typed] + words[i + 1:]), " ".join(words)))
    return pairs


def restored(analyzer: Analyzer, pairs: list[tuple[str, str]], label: str) -> float:
    """Share of (typed, as spelt) pairs whose analyses read the same."""
    same = sum(analyzer.analyze(typed).text == analyzer.analyze(spelt).text
               for typed, spelt in tqdm(pairs, desc=label, leave=False))
    return round(same / max(1, len(pairs)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--unlikely", default="0.05,0.15,0.3,0.5,1", help="UNLIKELY weights, comma-separated")
    parser.add_argument("--beside", default=str(slips.BESIDE), help="BESIDE weights, comma-separated")
    parser.add_argument("--phrases", type=int, default=3000, help="titles drawn for the unlikely slips")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    products = dataset.products
    vocabulary = Vocabulary.build(products["title"].tolist(), products["description"].tolist())
    likely = [(typo, text) for qid, text in dataset.select(args.split)
              if not unknown_words(text, vocabulary) and (typo := slipped(qid, text)) is not None]
    unlikely = unlikely_pairs(products["title"].tolist(), vocabulary, args.phrases)
    served = (slips.UNLIKELY, slips.BESIDE)
    rows = []
    try:
        for weight, beside in itertools.product(_floats(args.unlikely), _floats(args.beside)):
            slips.UNLIKELY, slips.BESIDE = weight, beside  # read by slip_weight at each call
            analyzer = Analyzer(vocabulary)  # a new cache for each setting
            rows.append({"unlikely": weight, "beside": beside,
                         "likely_slips_restored": restored(analyzer, likely, f"likely {weight}/{beside}"),
                         "unlikely_slips_restored": restored(analyzer, unlikely, f"unlikely {weight}/{beside}")})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        slips.UNLIKELY, slips.BESIDE = served
    report = {"hardware": hardware(), "command": command(), "split": args.split,
              "served": {"unlikely": served[0], "beside": served[1]},
              "likely_slips": len(likely), "unlikely_slips": len(unlikely), "settings": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"weights {text!r} are not comma-separated numbers, e.g. 0.05,0.15,0.3") from None
    if any(not 0 < v <= 1 for v in values):
        raise SystemExit(f"weights {text!r}: each must be above 0 and at most 1")
    return values


if __name__ == "__main__":
    main()
