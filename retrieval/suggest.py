"""Query suggestions as the shopper types (``/v1/suggest``): phrases that start with what was typed.

Two sources of phrases, normalized as the index normalizes text (``retrieval.vocabulary``):

- **the catalog**: the 1-3 word runs of the product titles that at least ``min_products``
  products share (``cordless drill``, ``ceiling fan light``), without runs that begin or end
  with a number, a unit or a joining word; weighed by how many products hold them;
- **the shoppers' searches** (``shoprank suggestions``, nightly, from the event log): the
  analyzed texts that enough distinct shoppers searched, weighed by how many. They come first.

A typed text matches a phrase when the phrase, or the phrase from one of its later words on,
starts with it (``drill`` finds ``cordless drill`` after ``drill bits``): the last word may
be partial; a trailing space or mark (``1/2"``, ``in.``) ends it. :class:`Suggester` keeps
every such key in one sorted list: a prefix is a range of it, found by bisection; the best phrases of each prefix up to
:data:`SHORT` characters are worked out when it is built, longer prefixes' ranges are short
enough to rank when asked.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from retrieval.analyzer import Analyzer
from retrieval.vocabulary import JOINING_WORDS, TOKEN, UNIT_WORDS, common, normalize, word_char

# words a phrase neither begins nor ends with: joining words, and units (``cu ft``, ``18 volt``)
JOINING = JOINING_WORDS | UNIT_WORDS | {"w"}
SHORT = 4  # prefixes up to this many characters have their best phrases ready
LOGGED, CATALOG = 1, 0  # the rank of a source: logged searches before catalog phrases


def singular(word: str) -> str:
    """``drills`` -> ``drill``, ``boxes`` -> ``box`` (not ``glass``, ``corded``): a plural and its singular
    are one suggestion."""
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _usable(words: Sequence[str]) -> bool:
    return not any(w in JOINING or w[0].isdigit() for w in (words[0], words[-1])) and all(len(w) > 1 for w in words)


def catalog_phrases(titles: Iterable[str], min_products: int = 3, longest: int = 3) -> dict[str, int]:
    """The 1..``longest`` word runs of ``titles`` (normalized) that ``min_products`` or more titles
    hold, with how many hold each."""
    counts: Counter[str] = Counter()
    for title in titles:
        words = TOKEN.findall(normalize(title))
        runs = {" ".join(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)
                if _usable(words[i : i + n])}
        counts.update(runs)
    return {phrase: count for phrase, count in counts.items() if count >= min_products}


@dataclass(frozen=True)
class Suggestion:
    text: str
    source: str  # "searches" or "catalog"
    weight: float  # searches, or products holding the phrase


class Suggester:
    """Phrases by prefix; see the module docstring.

    Args:
        catalog: Catalog phrases and how many products hold each.
        logged: Searched texts and how often they were searched (ranked first).
    """

    def __init__(self, catalog: Mapping[str, float], logged: Mapping[str, float] | None = None,
                 best: int = 20) -> None:
        phrases: dict[str, tuple[int, float]] = {p: (CATALOG, float(w)) for p, w in catalog.items()}
        for text, weight in (logged or {}).items():
            phrase = " ".join(TOKEN.findall(normalize(text)))
            if phrase:  # texts that normalize alike add up their searches
                previous = phrases.get(phrase)
                phrases[phrase] = (LOGGED, float(weight) + (previous[1] if previous and previous[0] == LOGGED else 0.0))
        self.phrases = list(phrases)
        self.ranks = [phrases[p] for p in self.phrases]
        entries = []
        for pid, phrase in enumerate(self.phrases):
            words = phrase.split(" ")
            for start in range(len(words)):  # the phrase from each of its words on; later starts rank lower
                entries.append((" ".join(words[start:]), pid, start))
        entries.sort()
        self.keys = [key for key, _, _ in entries]
        self.entries = [(pid, start) for _, pid, start in entries]
        self.best = best
        self.short: dict[str, list[int]] = {}  # prefix -> its best phrases, best first
        self.lead: dict[str, list[int]] = {}  # the same among the phrases that start with it
        for position in sorted(range(len(self.keys)), key=self._order, reverse=True):
            key, (pid, start) = self.keys[position], self.entries[position]
            for length in range(1, min(SHORT, len(key)) + 1):
                for ready in (self.short, self.lead) if start == 0 else (self.short,):
                    chosen = ready.setdefault(key[:length], [])
                    if len(chosen) < best and pid not in chosen:
                        chosen.append(pid)

    def __len__(self) -> int:
        return len(self.phrases)

    def _order(self, position: int) -> tuple[int, int, float]:
        pid, start = self.entries[position]
        source, weight = self.ranks[pid]
        return source, -start, weight

    def _top(self, positions: Iterable[int], k: int) -> list[int]:
        """The best ``k`` distinct phrases among the entries at ``positions``, best first."""
        chosen: list[int] = []
        seen: set[int] = set()
        for position in sorted(positions, key=self._order, reverse=True):
            pid = self.entries[position][0]
            if pid not in seen:
                seen.add(pid)
                chosen.append(pid)
                if len(chosen) == k:
                    break
        return chosen

    def _find(self, prefix: str, k: int, leading: bool) -> list[int]:
        """The best ``k`` phrases with a key that starts with ``prefix`` (``leading``: phrases that
        start with it, not from a later word)."""
        if len(prefix) <= SHORT and k <= self.best:
            return (self.lead if leading else self.short).get(prefix, [])[:k]
        lo = bisect_left(self.keys, prefix)
        hi = bisect_left(self.keys, prefix + "\U0010ffff", lo)
        positions = [p for p in range(lo, hi) if self.entries[p][1] == 0] if leading else range(lo, hi)
        if len(positions) <= 4 * k:
            return self._top(positions, k)
        return self._top(heapq.nlargest(8 * k, positions, key=self._order), k)  # the best entries, then distinct

    def suggest(self, typed: str, k: int = 8, holding: Callable[[list[str]], int] | None = None) -> list[Suggestion]:
        """Up to ``k`` phrases for ``typed`` (as the shopper typed it: the last word may be partial).
        When fewer than ``k`` phrases match the whole text, its first words are kept and the rest
        completed (``bosch cordless dr`` -> ``bosch cordless drill``), fewest words kept first: only a
        phrase that repeats none of the kept words and, with ``holding`` (how many products hold all of some
        words), whose words some product holds with the last kept word (no ``ceiling fan faucet``: no product
        holds ``fan`` and ``faucet``); such a catalog suggestion weighs the products holding all its words."""
        words = TOKEN.findall(normalize(typed))
        end = " " if ended(typed) else ""
        found: dict[str, Suggestion] = {}  # by its words' singulars: "drills" after "drill" is not new
        for drop in range(len(words)):
            kept = " ".join(words[:drop])
            for pid in self._find(" ".join(words[drop:]) + end, 2 * k, leading=drop > 0):
                text = f"{kept} {self.phrases[pid]}" if kept else self.phrases[pid]
                typed = {singular(w) for w in words[:drop]}  # a completion repeats none of the words kept
                if kept and (any(singular(w) in typed for w in self.phrases[pid].split(" ")) or (
                        holding is not None and not holding([words[drop - 1], *self.phrases[pid].split(" ")]))):
                    continue
                source, weight = self.ranks[pid]
                if kept and source != LOGGED and holding is not None:  # not the completing phrase's own weight
                    weight = holding(text.split(" "))
                found.setdefault(" ".join(map(singular, text.split(" "))),
                                 Suggestion(text, "searches" if source == LOGGED else "catalog", weight))
            if len(found) >= k:
                break
        return list(found.values())[:k]


def ended(typed: str) -> bool:
    """Whether the shopper finished the last word: the text ends with a space or a mark that is no
    letter or digit (``1/2"``, ``3/4 in.``), not in the middle of a word."""
    return not typed or not word_char(typed[-1])


def suggest(suggester: Suggester, analyzer: Analyzer, typed: str, k: int, spelling: bool = True) -> list[Suggestion]:
    """What ``/v1/suggest`` offers: the suggestions for ``typed`` read by :func:`as_searched`; when
    none match and the last word has 4+ letters, that word read as a whole one, spelling-corrected
    (``cordlss`` -> ``cordless``). ``spelling``: ``retrieval.spelling`` (off: no word is corrected, as a
    search then corrects none)."""
    vocabulary = analyzer.vocabulary

    @lru_cache(maxsize=512)
    def holding(words: tuple[str, ...]) -> np.ndarray:  # the products holding them all: one intersection a word
        if len(words) == 1:
            return vocabulary.docs_of(words[0])
        return common(holding(words[:-1]), vocabulary.docs_of(words[-1]))

    count = (lambda words: len(holding(tuple(words)))) if vocabulary.postings else None
    found = suggester.suggest(as_searched(analyzer, typed, spelling), k, count)
    words = typed.split()
    if not found and words and len(words[-1]) >= 4 and not ended(typed):
        whole = analyzer.analyze(typed, spelling=spelling, equivalents=False)  # a one-way synonym, corrected
        if whole.rewrites and whole.text:
            found = suggester.suggest(whole.text, k, count)
    if not found and words and singular(words[-1].lower()) != words[-1].lower():  # "drills": the phrases of "drill"
        one = " ".join([*words[:-1], singular(words[-1].lower())]) + (" " if ended(typed) else "")
        found = suggester.suggest(as_searched(analyzer, one, spelling), k, count)
    return found


def as_searched(analyzer: Analyzer, typed: str, spelling: bool = True) -> str:
    """``typed`` with the words before the last one as a search reads them (spelling-corrected by
    ``analyzer``: ``cordles dr`` -> ``cordless dr``, unless ``spelling`` is off, and a one-way synonym rule's
    words in place of its entry); the last word, maybe partial, as typed. An equivalent-words rule adds
    nothing: a suggestion keeps the words the shopper typed (``fridge sa`` gave ``fridge refrigerator
    samsung``)."""
    words = typed.split()
    partial = "" if ended(typed) or not words else words[-1]
    completed = typed[: len(typed.rstrip()) - len(partial)] if partial else typed
    if completed.strip():
        analysis = analyzer.analyze(completed, spelling=spelling, equivalents=False)
        if analysis.rewrites:
            return f"{analysis.text} {partial}" if partial else f"{analysis.text} "
    return typed
