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

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from retrieval.analyzer import Analyzer
from retrieval.vocabulary import (
    JOINING_WORDS,
    TOKEN,
    UNIT_WORDS,
    common,
    normalize,
    visible,
    word_char,
)

# words a phrase neither begins nor ends with: joining words, and units (``cu ft``, ``18 volt``)
JOINING = JOINING_WORDS | UNIT_WORDS | {"w"}
SHORT = 4  # prefixes up to this many characters have their best phrases ready
LOOK_AT_MOST = 32  # completions of kept words looked at per suggestion asked for, at most: a bound on a call
LOGGED, CATALOG = 1, 0  # the rank of a source: logged searches before catalog phrases


@lru_cache(maxsize=1 << 16)  # read again for every phrase a call looks at
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
        ranked = sorted(range(len(self.keys)), key=self._order, reverse=True)
        self._rank = np.empty(len(ranked), dtype=np.int64)  # each entry's place in that order
        self._rank[ranked] = np.arange(len(ranked))
        self._pid = np.array([pid for pid, _ in self.entries], dtype=np.int64)
        self._leads = np.array([start == 0 for _, start in self.entries], dtype=bool)
        for position in ranked:
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

    def _ordered(self, prefix: str, leading: bool) -> np.ndarray:
        """Every phrase with a key that starts with ``prefix`` (``leading``: phrases that start with it, not from a
        later word), best first: each at its best entry, in the order the ready lists of short prefixes have."""
        lo = bisect_left(self.keys, prefix)
        hi = bisect_left(self.keys, prefix + "\U0010ffff", lo)
        keep = self._leads[lo:hi] if leading else slice(None)
        pids = self._pid[lo:hi][keep][np.argsort(self._rank[lo:hi][keep], kind="stable")]
        _, at = np.unique(pids, return_index=True)  # each phrase's first (best) entry
        return pids[np.sort(at)]

    def _ranked(self, prefix: str, leading: bool, first: int) -> Iterator[int]:
        """Every phrase with a key that starts with ``prefix`` (``leading``: phrases that start with it, not from a
        later word), best first: a short prefix's best ``first`` from its ready list, the others (and every phrase
        of a longer prefix) ranked once, only when they are asked for."""
        rest = 0
        if len(prefix) <= SHORT and first <= self.best:
            ready = (self.lead if leading else self.short).get(prefix, [])[:first]
            yield from ready
            if len(ready) < first:  # the ready list holds every phrase of a prefix with fewer than ``best``
                return
            rest = first
        yield from self._ordered(prefix, leading)[rest:].tolist()

    def suggest(self, typed: str, k: int = 8, holding: Callable[[list[str]], int] | None = None) -> list[Suggestion]:
        """Up to ``k`` phrases for ``typed`` (as the shopper typed it: the last word may be partial).
        When fewer than ``k`` phrases match the whole text, its first words are kept and the rest
        completed (``bosch cordless dr`` -> ``bosch cordless drill``), fewest words kept first: only a
        phrase that repeats none of the kept words and, with ``holding`` (how many products hold all of some
        words), whose words some product holds with the last kept word (no ``ceiling fan faucet``: no product
        holds ``fan`` and ``faucet``); such a catalog suggestion weighs the products holding all its words, and
        the completions of the same kept words come by the weight they show."""
        typed = visible(typed)
        words = TOKEN.findall(normalize(typed))
        end = " " if ended(typed) else ""
        found: dict[str, Suggestion] = {}  # by its words' singulars: "drills" after "drill" is not new
        for drop in range(len(words)):
            found.update(self._completions(words, drop, end, k, holding, found))
            if len(found) >= k:
                break
        return list(found.values())[:k]

    def _completions(self, words: list[str], drop: int, end: str, k: int, holding: Callable[[list[str]], int] | None,
                     found: Mapping[str, Suggestion]) -> dict[str, Suggestion]:
        """The suggestions that keep ``words[:drop]`` and complete the rest, none of ``found`` (by their words'
        singulars): of the phrases that complete it, best first, the first ``2 * k``, then the next ones until
        with ``found`` ``k`` pass the checks of :meth:`suggest` (a check may throw most of them away), none is
        left, or ``LOOK_AT_MOST * k`` were looked at (a rare kept word before one letter: ``esprit s``)."""
        kept = " ".join(words[:drop])
        typed = {singular(w) for w in words[:drop]}  # a completion repeats none of the words kept
        group: dict[str, Suggestion] = {}
        if kept and holding is not None and not holding([words[drop - 1]]):
            return group  # no product holds the last kept word: none holds it with a completion
        leads: dict[str, bool] = {}  # a phrase's first word -> whether some product holds it with the last kept word

        def fit(phrase: list[str]) -> bool:
            if any(singular(w) in typed for w in phrase):
                return False
            if holding is None:
                return True
            if phrase[0] not in leads:  # many phrases share it: where most fail (the whole check reads it again)
                leads[phrase[0]] = bool(holding([words[drop - 1], phrase[0]]))
            return leads[phrase[0]] and (len(phrase) == 1 or bool(holding([words[drop - 1], *phrase])))

        for looked, pid in enumerate(self._ranked(" ".join(words[drop:]) + end, drop > 0, 2 * k), 1):
            phrase = self.phrases[pid].split(" ")
            if not kept or fit(phrase):
                text = f"{kept} {self.phrases[pid]}" if kept else self.phrases[pid]
                source, weight = self.ranks[pid]
                if kept and source != LOGGED and holding is not None:  # not the completing phrase's own weight
                    weight = holding(text.split(" "))
                key = " ".join(map(singular, text.split(" ")))
                if key not in found:
                    group.setdefault(key, Suggestion(text, "searches" if source == LOGGED else "catalog", weight))
            if looked >= 2 * k and (len(found) + len(group) >= k or looked >= LOOK_AT_MOST * k):
                break  # the best 2 * k, then more until k are found (or LOOK_AT_MOST * k were looked at)
        if kept:  # by the weight shown, searched texts first (sorted() keeps the order of equal weights)
            return dict(sorted(group.items(), key=lambda item: (item[1].source == "searches", item[1].weight),
                               reverse=True))
        return group


def ended(typed: str) -> bool:
    """Whether the shopper finished the last word: the text ends with a space or a mark that is no
    letter or digit (``1/2"``, ``3/4 in.``), not in the middle of a word. An invisible format character ends
    nothing (``cordl`` and a soft hyphen: :func:`~retrieval.vocabulary.normalize` deletes it)."""
    typed = visible(typed)
    return not typed or not word_char(typed[-1])


def suggest(suggester: Suggester, analyzer: Analyzer, typed: str, k: int, spelling: bool = True) -> list[Suggestion]:
    """What ``/v1/suggest`` offers: the suggestions for ``typed`` read by :func:`as_searched`; when
    none match and the last word has 4+ letters, that word read as a whole one, spelling-corrected
    (``cordlss`` -> ``cordless``). ``spelling``: ``retrieval.spelling`` (off: no word is corrected, as a
    search then corrects none)."""
    typed = visible(typed)  # a soft hyphen or a direction mark typed last ends no word, and splits none
    vocabulary = analyzer.vocabulary

    @lru_cache(maxsize=512)
    def holding(words: tuple[str, ...]) -> np.ndarray:  # the products holding them all: one intersection a word
        if len(words) == 1:
            return vocabulary.docs_of(words[0])
        return common(holding(words[:-1]), vocabulary.docs_of(words[-1]))

    count = (lambda words: len(holding(tuple(words)))) if vocabulary.postings else None
    found = suggester.suggest(as_searched(analyzer, typed, spelling), k, count)
    if found:
        return found
    words = TOKEN.findall(normalize(typed))  # the words as read, not as split at spaces ("drills." is "drills")
    if words and len(words[-1]) >= 4 and not ended(typed):
        whole = analyzer.analyze(typed, spelling=spelling, equivalents=False)  # a one-way synonym, corrected
        if whole.rewrites and whole.text:
            found = suggester.suggest(whole.text, k, count)
    if not found and words and singular(words[-1]) != words[-1]:  # "drills": the phrases of "drill"
        one = " ".join([*words[:-1], singular(words[-1])]) + (" " if ended(typed) else "")
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
