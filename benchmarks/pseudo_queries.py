"""Bi-encoder training examples with queries made from catalog titles.

The judged training queries name a small part of the catalog: on the Home Depot data 7,607
queries make 32,612 pairs, and most products are never anyone's positive. This writes a copy of a
training file (``shoprank train biencoder --export FILE``) with ``--count`` extra groups, each a
query cut from one product's title, that product its only relevant product, and no mined
negative (the batch's other products are its negatives):

- the title's head is the part before its first qualifier (`` with ``, `` for ``, `` in `` before
  a word, ``(``, a comma, `` - ``), where storefront titles put the product type last
  (``Whirlpool 1.9 cu. ft. Over the Range Convection Microwave``);
- a query is the head's last two or three words (measures and fillers left out), after its first
  word (the brand) half the time and one other word of the title a third of the time:
  ``whirlpool convection microwave``, ``stainless range microwave``.

The products are drawn uniformly from the whole catalog, never by what the judgments cover: a
product no training query judged is much more often a held-out query's (the catalog is the union
of the judged products), so choosing the uncovered ones would carry the held-out judgments into
training.

    python benchmarks/pseudo_queries.py examples.json.gz --count 12000 --out pseudo.json.gz
    python -m ranking.training.biencoder pseudo.json.gz --out FOLDER --batch-size 128 --epochs 2 --lr 3e-5
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command, hardware  # noqa: E402
from ranking.training.data import Group, read_examples, write_examples  # noqa: E402

QUALIFIER = re.compile(r"(?<![\d/.]) in (?=[a-z])| with | for | - |\(|, ")
WORD = re.compile(r"[a-z0-9][a-z0-9./\-']*")
NUMBER = re.compile(r"^[\d./\-]+$")
# measures and fillers a title spells out but a query would not end on
FILLER = {"in", "in.", "ft", "ft.", "lb", "lb.", "oz", "oz.", "gal", "gal.", "cu", "cu.", "sq", "sq.", "x", "w", "h",
          "l", "d", "mm", "cm", "and", "of", "the", "a", "to", "on", "by", "for", "with", "pack", "piece",
          "discontinued"}


def head(text: str) -> str:
    """A lower-cased title up to its first qualifier."""
    return QUALIFIER.split(text, maxsplit=1)[0]


def pseudo_query(title: str, rng: random.Random) -> str | None:
    """A short query for the product titled ``title``, or None when its head has no word to name it."""
    text = html.unescape(title).lower()
    words = [w for w in WORD.findall(head(text).replace("-discontinued", "")) if w not in FILLER]
    core = [w for w in words[1:] if not NUMBER.match(w)]
    if not core:
        return None
    tail = core[-rng.randint(min(2, len(core)), min(3, len(core))):]
    query = list(tail)
    others = [w for w in WORD.findall(text)
              if w not in FILLER and w not in tail and w != words[0] and not NUMBER.match(w)]
    if others and rng.random() < 1 / 3:
        query.insert(0, rng.choice(others))
    if len(query) == 1 or rng.random() < 0.5:
        query.insert(0, words[0])
    return " ".join(query)


def pseudo_groups(texts: dict[str, str], count: int, grade: int, seed: int) -> list[Group]:
    """Training groups for ``count`` products drawn uniformly, each its query's one relevant product."""
    rng = random.Random(seed)
    products = sorted(texts)
    chosen = rng.sample(products, min(count, len(products)))
    groups = []
    for product in chosen:
        query = pseudo_query(texts[product], rng)
        if query:
            groups.append(Group(f"pseudo-{product}", query, {product: grade}, []))
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="a file from `shoprank train biencoder --export`")
    parser.add_argument("--count", type=int, default=12000, help="products to make a query for")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--show", type=int, default=0, help="print this many of the queries")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    payload = read_examples(args.examples, "biencoder")
    grade = int(payload["config"].get("max_grade", 8))
    groups = pseudo_groups(payload["texts"], args.count, grade, args.seed)
    for group in groups[:args.show]:
        print(f"{group.query!r:45} <- {payload['texts'][next(iter(group.judged))]}")
    payload["train"] = [*payload["train"], *groups]
    write_examples(args.out, "biencoder", payload)  # it writes the format and kind itself
    ran = command() if argv is None else " ".join(["python", "benchmarks/pseudo_queries.py", *argv])
    print(json.dumps({"hardware": hardware(), "command": ran,
                      "judged_groups": len(payload["train"]) - len(groups), "pseudo_groups": len(groups),
                      "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
