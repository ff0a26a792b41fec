"""The query analyzer: normalization, spelling correction against the catalog, brands and types.

One analyzer per index, shared by BM25 (the index holds normalized text), the
ranking features and the logs. :meth:`Analyzer.analyze` turns a shopper's text
into an :class:`~core.query.Analysis`:

1. **Normalize** (:func:`retrieval.vocabulary.normalize`, applied to product text
   at indexing too): case, unicode fractions, units and their spellings after a
   number (``1/2 in.``, ``1/2 inch`` and ``1/2"`` all become ``1/2 in``),
   dimensions, hyphens and symbols. Then the store's synonym rules, if any
   (:mod:`retrieval.synonyms`, setting ``retrieval.synonyms``), replace or expand the
   words they name; the words they put in are never corrected.
2. **Correct** each word the catalog does not contain (neither the word nor its
   stem is in the :class:`Vocabulary`): to a catalog word one edit away
   (SymSpell, Garbe 2012; ``nozzzle`` -> ``nozzle``, ``dimond`` -> ``diamond``),
   the likeliest typing slip that products hold with the query's other words
   (:mod:`retrieval.slips`; ``basli`` -> ``basil``, not the more frequent ``bali``),
   else, for a plural, one edit from a catalog word's plural
   (``sruds`` -> ``studs`` where titles say ``stud``), else as a run-together word
   split into two catalog words, plurals included (``windowair`` -> ``window air``,
   ``flatbraces`` -> ``flat braces``), else to the most frequent catalog word two
   edits away (words over 5 letters; ``candlebra`` -> ``candelabra``; plurals
   over 6 letters too, ``medialons`` -> ``medallions``), else, for a long word,
   as three catalog words run together (``cabinetwithouttops``), else to a
   catalog word three edits away that products hold together with the query's
   other words (``fridgdare air conditioners`` -> ``frigidaire``). A word of 3
   letters with a vowel (codes and abbreviations often are short) only to a likely
   slip of a catalog word that at least 10 products hold with one of the query's
   other words (``rotary cut out tol`` -> ``tool``). Words the catalog contains
   (brands, model numbers), English words and consonant runs (``sst``, ``brn``) of 3
   letters, words with digits and words of fewer than 3 letters are never changed,
   and a word with no suggestion is kept: a correction never turns a query into
   nothing.
3. **Detect** brand and product-type words: words the catalog uses as brands
   (a ``brand`` column, else words that mostly lead titles) and as product types
   (a ``category`` column, else words that often end titles).

The :class:`~retrieval.vocabulary.Vocabulary` is built from the live catalog when
the index is built or changed, and stored with it (``vocabulary.json``).
"""

from __future__ import annotations

import copy
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from core.query import Analysis, Rewrite
from retrieval.slips import LIKELY, slip_weight
from retrieval.synonyms import Synonyms
from retrieval.vocabulary import (
    TOKEN,
    UNIT_WORDS,
    UNITS,
    Vocabulary,
    is_word,
    normalize,
    numbers,
    stem,
)

MAX_SUGGESTIONS = 8  # candidates per misspelled word weighed by context
_IDEOGRAPHIC = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")  # kana, Han, Hangul
FAR_LENGTH = 8  # a word this long with nothing two edits away may be three away from a word used with the query
SPLIT3_LENGTH = 9  # a word this long may be three catalog words run together
SHORT_TOGETHER = 10  # products holding a three-letter word's correction with another query word, at least


@lru_cache(maxsize=1)
def english_word_counts() -> dict[str, int]:
    """symspellpy's English frequency list (82,765 words and their counts, shipped with the package)."""
    import symspellpy

    with (Path(symspellpy.__file__).parent / "frequency_dictionary_en_82_765.txt").open(encoding="utf-8") as f:
        return {word: int(count) for word, count in (line.split() for line in f if line.strip())}


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The words of :func:`english_word_counts`: a typed word found there may be a real word the
    catalog lacks, not a typo."""
    return frozenset(english_word_counts())


class Analyzer:
    """Analyzes query texts against one catalog's :class:`Vocabulary` (thread-safe, cached).

    Args:
        vocabulary: The catalog's words.
        cache_size: Analyses kept (LRU): head queries repeat.
        context: Rank a misspelled word's candidates by how many products hold
            them with the query's other words (``skill saw`` -> ``skil saw``, not the
            more frequent ``sill``; :meth:`Vocabulary.together`), then by frequency;
            False: by frequency alone.
        keep: Words never corrected or split although the catalog lacks them (with
            ``retrieval.keep_english_words``: :func:`english_words`, so that ``negative``
            does not become ``native``).
        synonyms: The store's synonym rules (``retrieval.synonyms``), applied first.
    """

    def __init__(self, vocabulary: Vocabulary, cache_size: int = 10_000, context: bool = True,
                 keep: frozenset[str] = frozenset(), synonyms: Synonyms | None = None) -> None:
        self.vocabulary = vocabulary
        self.synonyms = synonyms if synonyms is not None and synonyms.rules else None
        self.context = context
        self.keep = keep
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, bool, bool], Analysis] = OrderedDict()
        self._lock = threading.Lock()
        self._symspell = None
        self._by_initial: dict[str, list[str]] = {}  # catalog words by first letter, filled with the speller
        english_words()  # read now (~40 ms, once a process), not on the first long misspelled word
        self._speller()  # built now (~1-3 s for a large catalog), not on the first misspelled query

    def _speller(self):  # type: ignore[no-untyped-def]
        if self._symspell is None:
            from symspellpy import SymSpell

            speller = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
            by_initial: dict[str, list[str]] = {}
            for word, count in self.vocabulary.counts.items():
                if is_word(word) and len(word) > 2:
                    speller.create_dictionary_entry(word, count)
                    by_initial.setdefault(word[0], []).append(word)
            self._symspell, self._by_initial = speller, by_initial
        return self._symspell

    def _count(self, word: str) -> int:
        """How often the catalog holds ``word``; for a form it holds only by stem (``braces`` where
        titles say ``brace``), the number of products holding the stem."""
        count = self.vocabulary.counts.get(word, 0)
        return count or len(self.vocabulary._docs(word))

    def _split(self, word: str) -> tuple[str, str] | None:
        best, score = None, 0
        for i in range(2, len(word) - 1):
            a, b = word[:i], word[i:]
            # ``theft`` is not ``the ft``, nor ``bulletin`` ``bullet in``; ``sqft`` is ``sq ft``, a unit of two words
            if min(len(a), len(b)) < 3 and f"{a} {b}" not in UNITS:
                continue
            found = min(self._count(a), self._count(b))
            if found >= 2 and found > score:
                best, score = (a, b), found
        return best

    def _split3(self, word: str) -> tuple[str, str, str] | None:
        """Three words run together (``cabinetwithouttops``), each of 4 letters or more and each a word the
        catalog's text holds as it is (not only by stem: ``purification`` is not ``purifi cat ion``)."""
        counts = self.vocabulary.counts
        best, score = None, 0
        for i in range(4, len(word) - 7):
            first = counts.get(word[:i], 0)
            if first < 2:
                continue
            for j in range(i + 4, len(word) - 3):
                found = min(first, counts.get(word[i:j], 0), counts.get(word[j:], 0))
                if found >= 2 and found > score:
                    best, score = (word[:i], word[i:j], word[j:]), found
        return best

    def _far(self, word: str, context: Sequence[str]) -> str | None:
        """A catalog word three edits from a long ``word`` (``fridgdare`` -> ``frigidaire``) that some
        product holds together with one of the query's other words, with the same first letter and
        at most one letter shorter; None without one, or for an English word (three edits reach too
        many words to trust one out of context: ``apartment`` is not ``assortment``)."""
        if not context or word in english_words():
            return None
        from editdistpy import damerau_osa_distance

        together = self.vocabulary.together
        found = []
        for term in self._by_initial.get(word[0], ()):
            if len(word) - 1 <= len(term) <= len(word) + 3 and damerau_osa_distance(word, term, 3) >= 0:
                shared = together([term], list(context))
                if shared:
                    found.append((shared, self.vocabulary.counts.get(term, 0), term))
        return max(found)[2] if found else None

    def _best(self, suggestions: list, context: Sequence[str], typed: str = "") -> str:  # type: ignore[type-arg]
        """The suggestion found most often with the query's other words, then the most frequent; for
        suggestions one edit from ``typed``, those counts (plus one) weighed by how likely the edit is as
        a typing slip (:func:`retrieval.slips.slip_weight`: ``basli`` is ``basil`` swapped, not ``bali``)."""
        if len(suggestions) == 1:
            return suggestions[0].term
        together, others = self.vocabulary.together, list(context)
        use_context = self.context and bool(context)

        def found(s) -> int:  # type: ignore[no-untyped-def]
            return together([s.term], others) if use_context else 0

        if typed:
            return max(suggestions, key=lambda s: ((found(s) + 1) * slip_weight(typed, s.term), s.count)).term
        return max(suggestions, key=lambda s: (found(s), s.count)).term

    def _correct(self, word: str, context: Sequence[str] = ()) -> tuple[str, str] | None:
        """(replacement, reason) for a word outside the vocabulary, or None to keep it.

        ``context``: the query's other words that the catalog knows."""
        if (len(word) < 3 or not is_word(word) or self.vocabulary.knows(word) or word in self.keep
                or _IDEOGRAPHIC.search(word)):  # a CJK run is a phrase, not a word: an edit changes its meaning
            return None
        if len(word) == 3:
            short = self._short(word, context)
            return None if short is None else (short, "spelling")
        from symspellpy import Verbosity

        found = self._speller().lookup(word, Verbosity.ALL, max_edit_distance=1 if len(word) <= 5 else 2)
        suggestions = sorted(found, key=lambda s: (s.distance, -s.count))[:MAX_SUGGESTIONS]
        close = [s for s in suggestions if s.distance <= 1]
        if close:  # one edit away: a typo
            return self._best(close, context, word), "spelling"
        plural = self._plural(word, context, 1)
        if plural is not None:  # a plural the catalog holds only in the singular (sruds -> studs)
            return plural, "spelling"
        split = self._split(word)
        if split is not None:  # two catalog words run together
            return " ".join(split), "split"
        if suggestions:
            return self._best(suggestions, context), "spelling"
        if len(word) > 6:
            plural = self._plural(word, context, 2)  # medialons -> medallions
            if plural is not None:
                return plural, "spelling"
        if len(word) >= SPLIT3_LENGTH:
            split3 = self._split3(word)
            if split3 is not None:
                return " ".join(split3), "split"
        if len(word) >= FAR_LENGTH:
            far = self._far(word, context)
            if far is not None:
                return far, "spelling"
        return None

    def _short(self, word: str, context: Sequence[str]) -> str | None:
        """A three-letter word (``tol``, ``boc``, ``ubs``): too short to correct alone (codes and abbreviations
        are), so only to a catalog word one likely slip away that at least :data:`SHORT_TOGETHER` products hold
        with one of the query's other words (``rotary cut out tol`` -> ``tool``); never an English word, nor one
        without a vowel (``sst`` for stainless steel, ``brn`` for brown: abbreviations more often than slips)."""
        if not context or word in english_words() or not set(word) & set("aeiou"):  # sst, brn, pnt: abbreviations
            return None
        from symspellpy import Verbosity

        together, others = self.vocabulary.together, list(context)
        found = [(together([s.term], others), s.count, s.term)
                 for s in self._speller().lookup(word, Verbosity.ALL, max_edit_distance=1)
                 if s.distance == 1 and slip_weight(word, s.term) == LIKELY]
        found = [f for f in found if f[0] >= SHORT_TOGETHER]
        return max(found)[2] if found else None

    def _plural(self, word: str, context: Sequence[str], distance: int) -> str | None:
        """A misspelled plural ``distance`` edits from a catalog word's plural: the dictionary holds
        the catalog's surface words, and a word used only in the singular has no plural entry."""
        if not word.endswith("s") or word.endswith("ss") or len(word) < 5:
            return None
        from symspellpy import Verbosity

        singular = word[:-1]
        found = [s for s in self._speller().lookup(singular, Verbosity.ALL, max_edit_distance=distance)
                 if s.distance <= distance]
        if not found:
            return None
        best = self._best(sorted(found, key=lambda s: -s.count)[:MAX_SUGGESTIONS], context)
        return best + "s" if self.vocabulary.knows(best + "s") else best

    def with_synonyms(self, synonyms: Synonyms | None) -> Analyzer:
        """This analyzer with other synonym rules: the vocabulary and spelling dictionary are shared, the
        cache of analyses starts empty."""
        other = copy.copy(self)
        other.synonyms = synonyms if synonyms is not None and synonyms.rules else None
        other._cache, other._lock = OrderedDict(), threading.Lock()
        return other

    def analyze(self, text: str, rewrite: bool = True, spelling: bool = True, equivalents: bool = True) -> Analysis:
        """The analyzed query; with ``rewrite=False`` only normalized (no synonym, nothing corrected), with
        ``spelling=False`` the synonyms applied but no word corrected or split (``retrieval.spelling``), with
        ``equivalents=False`` only the one-way synonym rules applied (query suggestions keep the words typed:
        an equivalent set would add its other words)."""
        key = (text, rewrite, spelling, equivalents)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        analysis = self._analyze(text, rewrite, spelling, equivalents)
        with self._lock:
            self._cache[key] = analysis
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return analysis

    def _analyze(self, text: str, rewrite: bool, spelling: bool = True, equivalents: bool = True) -> Analysis:
        normalized = normalize(text)
        tokens = TOKEN.findall(normalized)
        placed: list[tuple[str, bool]] = [(t, False) for t in tokens]  # (word, put there by a synonym rule)
        rewrites: list[Rewrite] = []
        if rewrite and self.synonyms is not None:
            placed, rewrites = self.synonyms.apply(tokens, equivalents)
        known = [t for t, _ in placed if is_word(t) and len(t) > 2 and t not in UNIT_WORDS and self.vocabulary.knows(t)]
        out: list[str] = []
        for token, fixed in placed:
            # a unit after its number is the normalization's spelling (12v: 12 volt), in no title here or not
            unit = token in UNIT_WORDS and bool(out) and out[-1][:1].isdigit()
            change = self._correct(token, known) if rewrite and spelling and not fixed and not unit else None
            if change is None:
                out.append(token)
                continue
            replacement, reason = change
            rewrites.append(Rewrite(token, replacement, reason))
            out.extend(replacement.split())
        final = normalize(" ".join(out)) if rewrites else normalized  # a correction may spell a unit
        out = TOKEN.findall(final)
        vocab = self.vocabulary
        brand = tuple(w for w in out if w in vocab.brands)
        types = tuple(w for w in out if w in vocab.types or stem(w) in vocab.type_stems)
        return Analysis(original=text, text=final, tokens=tuple(out), rewrites=tuple(rewrites), brand=brand,
                        product_type=types, numbers=tuple(numbers(final)))
