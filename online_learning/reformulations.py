"""What shoppers searched next when a search failed them: reformulations, and the synonyms they suggest.

A shopper who searches ``btuair condtioner``, finds nothing they want, and searches ``btu air
conditioner`` a minute later and clicks, has told the store how its catalog is spelled. Over
many shoppers, these pairs name the typos, run-together words and store-specific words (``romex``
for a cable) that the analyzer and the synonyms do not handle yet.

:func:`reformulations` reads the searches of the event log (after the traffic filters) and, for
each shopper (user, else session: an anonymous search has no next one), takes each pair of
consecutive searches at most ``window`` seconds apart where the first **failed** (showed nothing,
or got no click, add to cart or purchase) and the second **succeeded** (a click, add to cart or
purchase) under a different searched text. The first is taken as typed (normalized: case, units,
symbols), as the synonyms read it; the second as it was searched. Pairs are counted by distinct shoppers; only those
at least ``min_shoppers`` made are kept, so no one shopper's text is shown (as with query
suggestions). Each pair says how the texts differ (:func:`relation`) and, where one word or one
phrase took the place of another, the synonym rule that would have searched the second text for
the first (``retrieval.synonyms``' format), for a merchandiser to review, not applied by itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from online_learning.analysis import searched_text, searches
from retrieval.vocabulary import normalize

SPELLING = "spelling"  # one word, a few letters apart
SPLIT = "split"  # the same letters, spaced otherwise (``btuair`` / ``btu air``)
REPLACED = "replaced"  # other words in the same place
NARROWED = "narrowed"  # words added
BROADENED = "broadened"  # words taken away
OTHER = "other"


@dataclass(frozen=True)
class Reformulation:
    """Shoppers whose search ``before`` failed them and who then found something with ``after``."""

    before: str
    after: str
    shoppers: int  # distinct shoppers who made this pair
    share: float  # of the shoppers whose search ``before`` failed, this share searched ``after`` next
    relation: str  # how the texts differ (SPELLING, SPLIT, REPLACED, NARROWED, BROADENED, OTHER)
    rule: str | None  # a synonym rule (``retrieval.synonyms``) that would search ``after`` for ``before``


def _edits(a: str, b: str) -> int:
    """Levenshtein distance of two words (short: the query words)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def relation(before: str, after: str) -> tuple[str, str | None]:
    """How ``after`` differs from ``before`` (two searched texts, normalized), and the synonym rule
    that maps the part of ``before`` that changed to what took its place (None where words were
    only added or taken away, or everything changed)."""
    a, b = before.split(), after.split()
    if "".join(a) == "".join(b):
        changed = _changed(a, b)
        return SPLIT, f"{changed[0]} => {changed[1]}" if changed else None
    if set(a) < set(b):
        return NARROWED, None
    if set(b) < set(a):
        return BROADENED, None
    changed = _changed(a, b)
    if changed is None:
        return OTHER, None
    old, new = changed
    if " " not in old and " " not in new and _edits(old, new) <= max(1, min(len(old), len(new)) // 4):
        return SPELLING, f"{old} => {new}"
    return REPLACED, f"{old} => {new}"


def _changed(a: list[str], b: list[str]) -> tuple[str, str] | None:
    """The run of words of ``a`` that ``b`` replaced, with what replaced it, when both texts share
    everything else (their first and last words around it); None when nothing of them is shared
    and they are longer than one word each."""
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    old, new = a[head : len(a) - tail], b[head : len(b) - tail]
    if not old or not new or (head == tail == 0 and (len(a) > 1 or len(b) > 1) and len(old) + len(new) > 3):
        return None
    return " ".join(old), " ".join(new)


def reformulations(log_root: Path, since: pd.Timestamp | None = None, window: float = 120.0,
                   min_shoppers: int = 3, top: int = 200) -> list[Reformulation]:
    """The reformulations of the log's searches since ``since`` (see the module's docstring), most
    shoppers first, then by share and text; at most ``top``."""
    per_search = searches(log_root, since=since)
    if per_search.empty:
        return []
    frame = per_search.assign(
        who=per_search["user_id"].fillna(per_search["session_id"]),
        typed=per_search["query"].astype(str).map(lambda q: " ".join(normalize(q).split())),
        text=searched_text(per_search).map(lambda q: " ".join(q.split())),
        success=(per_search[["clicked", "carted", "bought"]].sum(axis=1) > 0),
    )
    frame = frame[frame["who"].notna() & (frame["text"] != "")].sort_values(["who", "timestamp"], kind="stable")
    failed_by: dict[str, set[str]] = defaultdict(set)  # text as typed -> shoppers it failed
    pairs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for who, rows in frame.groupby("who", sort=False):
        typed, texts = rows["typed"].tolist(), rows["text"].tolist()
        times, wins = rows["timestamp"].tolist(), rows["success"].tolist()
        for i, won in enumerate(wins):
            if won:
                continue
            recovered, after = False, None
            for j in range(i + 1, len(texts)):
                if (times[j] - times[i]).total_seconds() > window:
                    break
                if texts[j] == texts[i]:  # the same search again (a page, a filter): it failed only if that did
                    recovered = wins[j]
                    if recovered:
                        break
                    continue
                after = j  # the next different search is the reformulation, found or not
                break
            if recovered:
                continue
            failed_by[typed[i]].add(who)
            if after is not None and wins[after] and texts[after] != typed[i]:
                pairs[(typed[i], texts[after])].add(who)
    found = []
    for (before, after), who in pairs.items():
        if len(who) < min_shoppers:
            continue
        kind, rule = relation(before, after)
        found.append(Reformulation(before, after, len(who), round(len(who) / len(failed_by[before]), 4), kind, rule))
    found.sort(key=lambda r: (-r.shoppers, -r.share, r.before, r.after))
    return found[:top]


def as_rows(found: list[Reformulation]) -> list[dict[str, object]]:
    return [asdict(r) for r in found]


def synonym_file(found: list[Reformulation]) -> str:
    """The rules of ``found`` as a synonyms file to review (``retrieval.synonyms``' format), each
    after a comment that says who asked for it."""
    lines = ["# Synonym rules from what shoppers searched next when a search failed them",
             "# (shoprank report reformulations): review each before using the file.", ""]
    seen = set()
    for r in found:
        if r.rule and r.rule not in seen:
            seen.add(r.rule)
            lines += [f"# {r.shoppers} shoppers searched {r.after!r} after {r.before!r} ({r.relation})", r.rule]
    return "\n".join(lines) + "\n"
