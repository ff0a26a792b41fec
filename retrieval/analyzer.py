"""The query analyzer: normalization, spelling correction against the catalog, brands and types.

One analyzer per index, shared by BM25 (the index holds normalized text), the
ranking features and the logs. :meth:`Analyzer.analyze` turns a shopper's text
into an :class:`~core.query.Analysis`:

1. **Normalize** (:func:`normalize`, applied to product text at indexing too):
   case, unicode fractions (``½`` -> ``1/2``), units and their spellings after a
   number (``1/2 in.``, ``1/2 inch`` and ``1/2"`` all become ``1/2 in``; ``12v``,
   ``12-Volt`` -> ``12 volt``; ``lbs``, ``gallons``, ``sq. ft.``, ...),
   dimensions (``2x4`` -> ``2 x 4``), hyphens and symbols.
2. **Correct** each word the catalog does not contain (neither the word nor its
   stem is in the :class:`Vocabulary`): to the most frequent catalog word one
   edit away (SymSpell, Garbe 2012; ``nozzzle`` -> ``nozzle``, ``dimond`` ->
   ``diamond``), else, for a plural, one edit from a catalog word's plural
   (``sruds`` -> ``studs`` where titles say ``stud``), else as a run-together word
   split into two catalog words, plurals included (``windowair`` -> ``window air``,
   ``flatbraces`` -> ``flat braces``), else to the most frequent catalog word two
   edits away (words over 5 letters; ``candlebra`` -> ``candelabra``; plurals
   over 6 letters too, ``medialons`` -> ``medallions``). Words the
   catalog contains (brands, model numbers), words with digits and words of
   fewer than 4 letters are never changed, and a word with no suggestion is kept:
   a correction never turns a query into nothing.
3. **Detect** brand and product-type words: words the catalog uses as brands
   (a ``brand`` column, else words that mostly lead titles) and as product types
   (a ``category`` column, else words that often end titles).

The vocabulary is built from the live catalog when the index is built or
changed, and stored with it (``vocabulary.json``).
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.query import Analysis, Rewrite

VERSION = 2  # bump when normalize() or the vocabulary file changes: indexes record it and are rebuilt

_UNITS = [  # (pattern after a number, canonical unit)
    (r'(?:"|”|″|\'\'|inches|inch|in\b\.?)', "in"),
    (r"(?:'|’|′|feet|foot|ft\b\.?)", "ft"),
    (r"(?:sq\.?\s*ft\b\.?|square\s+f(?:ee|oo)t)", "sq ft"),
    (r"(?:cu\.?\s*ft\b\.?|cubic\s+f(?:ee|oo)t)", "cu ft"),
    (r"(?:lbs?\b\.?|pounds?\b)", "lb"),
    (r"(?:gallons?\b|gal\b\.?)", "gal"),
    (r"(?:fl\.?\s*oz\b\.?|fluid\s+ounces?\b)", "fl oz"),
    (r"(?:ounces?\b|oz\b\.?)", "oz"),
    (r"(?:volts?\b|v\b)", "volt"),
    (r"(?:watts?\b|w\b)", "watt"),
    (r"(?:amps?\b|amperes?\b|a\b)", "amp"),
    (r"(?:btus?\b)", "btu"),
    (r"(?:gauge\b|ga\b\.?)", "gauge"),
    (r"(?:mm\b|millimeters?\b)", "mm"),
    (r"(?:cm\b|centimeters?\b)", "cm"),
]
UNITS = tuple(dict.fromkeys(unit for _, unit in _UNITS))
_NUMBER = r"(\d+(?:\.\d+)?(?: \d+/\d+|/\d+)?)"
_UNIT_RES = [(re.compile(_NUMBER + r"\s*-?\s*" + pattern, re.IGNORECASE), unit) for pattern, unit in _UNITS]
_NUMBER_WITH_UNIT = re.compile(_NUMBER + r"(?: (" + "|".join(re.escape(u) for u in UNITS) + r")\b)?")
_EMPTY = np.zeros(0, dtype=np.int32)
MAX_SUGGESTIONS = 8  # candidates per misspelled word weighed by context


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
TOKEN = re.compile(r"[a-z0-9]+(?:[./][0-9]+)*")


def normalize(text: str) -> str:
    """Lowercase, canonical units and fractions, no symbols (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).replace("\u2044", "/").lower()
    text = re.sub(r"(\d)\s*-\s*(\d+/\d+)", r"\1 \2", text)  # 1-1/2 -> 1 1/2
    text = re.sub(r"(\d)\s*/\s*(\d)", r"\1/\2", text)
    text = re.sub(r"(\d)\s*x\s*(?=\d)", r"\1 x ", text)  # 2x4 -> 2 x 4
    for pattern, unit in _UNIT_RES:
        text = pattern.sub(lambda m, u=unit: f"{m.group(1)} {u} ", text)
    text = text.replace("&", " and ")
    text = re.sub(r"(?<!\d)[./]|[./](?!\d)", " ", text)  # keep . and / only between digits
    text = re.sub(r"[^a-z0-9./]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def tokenize(text: str) -> list[str]:
    """The words of ``text`` after :func:`normalize` (fractions and decimals stay whole)."""
    return TOKEN.findall(normalize(text))


def numbers(normalized: str) -> list[str]:
    """Numbers of a normalized text, each with its unit when one follows (``1/2 in``, ``18 volt``)."""
    return [f"{n} {u}" if u else n for n, u in _NUMBER_WITH_UNIT.findall(normalized)]


_STEMMER = None


def stem(word: str) -> str:
    """The English Snowball stem (the same stemmer as the BM25 index)."""
    global _STEMMER
    if _STEMMER is None:
        import Stemmer

        _STEMMER = Stemmer.Stemmer("english")
    return _STEMMER.stemWord(word)


@dataclass
class Vocabulary:
    """The catalog's words with their counts, its brand and product-type words, and which
    products hold each word stem (``postings``: sorted doc ids)."""

    counts: dict[str, int]
    brands: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    postings: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stems = {stem(w) for w in self.counts}
        self.type_stems = {stem(w) for w in self.types}

    def knows(self, word: str) -> bool:
        return word in self.counts or stem(word) in self.stems

    def _docs(self, word: str) -> np.ndarray:
        return self.postings.get(stem(word), _EMPTY)

    def together(self, words: Sequence[str], any_of: Sequence[str] = ()) -> int:
        """Products holding every one of ``words`` and, when given, one of ``any_of`` (by stem)."""
        found = self._docs(words[0]) if words else _EMPTY
        for word in words[1:]:
            found = np.intersect1d(found, self._docs(word), assume_unique=True)
        if any_of and len(found):
            found = np.intersect1d(found, np.unique(np.concatenate([self._docs(w) for w in any_of])),
                                   assume_unique=True)
        return len(found)

    @classmethod
    def build(cls, titles: Sequence[str], descriptions: Sequence[str] | None = None,
              brands: Iterable[str | None] | None = None, categories: Iterable[str | None] | None = None,
              docs: Sequence[int] | None = None, min_count: int = 3) -> Vocabulary:
        """Count the words of the catalog; brand and type words from columns or from title positions.

        ``docs``: each title's doc id (default: its position)."""
        counts: Counter[str] = Counter()
        first: Counter[str] = Counter()
        last: Counter[str] = Counter()
        holders: dict[str, set[int]] = {}
        descriptions = [""] * len(titles) if descriptions is None else descriptions
        for position, (title, text) in enumerate(zip(titles, descriptions)):
            words = tokenize(title)
            counts.update(words)
            extra = tokenize(text) if isinstance(text, str) and text else []
            counts.update(extra)
            doc = docs[position] if docs is not None else position
            for word in {*words, *extra}:
                holders.setdefault(word, set()).add(doc)
            alpha = [w for w in words if w.isalpha() and w not in UNITS]
            if alpha:
                first[alpha[0]] += 1
                last[alpha[-1]] += 1
        brand_words = {w for b in brands or () if isinstance(b, str) for w in tokenize(b) if w.isalpha()}
        if not brand_words:  # words that mostly lead titles: brands in most storefront catalogs
            brand_words = {w for w, n in first.items() if n >= min_count and n >= 0.6 * counts[w]}
        type_words = {w for c in categories or () if isinstance(c, str) for w in tokenize(c) if w.isalpha()}
        if not type_words:  # words that often end titles: the head noun names the product type
            type_words = {w for w, n in last.items() if n >= min_count and n >= 0.2 * counts[w] and len(w) > 2}
        by_stem: dict[str, set[int]] = {}
        for word, held in holders.items():
            by_stem.setdefault(stem(word), set()).update(held)
        postings = {s: np.array(sorted(held), dtype=np.int32) for s, held in by_stem.items()}
        return cls(dict(counts), brand_words, type_words, postings)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"version": VERSION, "counts": self.counts, "brands": sorted(self.brands),
                                    "types": sorted(self.types),
                                    "postings": {s: d.tolist() for s, d in self.postings.items()}}))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        data = json.loads(path.read_text())
        postings = {s: np.asarray(d, dtype=np.int32) for s, d in data.get("postings", {}).items()}
        return cls(data["counts"], set(data["brands"]), set(data["types"]), postings)


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
    """

    def __init__(self, vocabulary: Vocabulary, cache_size: int = 10_000, context: bool = True,
                 keep: frozenset[str] = frozenset()) -> None:
        self.vocabulary = vocabulary
        self.context = context
        self.keep = keep
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, bool], Analysis] = OrderedDict()
        self._lock = threading.Lock()
        self._symspell = None
        self._speller()  # built now (~1-3 s for a large catalog), not on the first misspelled query

    def _speller(self):  # type: ignore[no-untyped-def]
        if self._symspell is None:
            from symspellpy import SymSpell

            speller = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
            for word, count in self.vocabulary.counts.items():
                if word.isalpha() and len(word) > 2:
                    speller.create_dictionary_entry(word, count)
            self._symspell = speller
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
            if min(len(a), len(b)) < 3 and not (a in UNITS or b in UNITS):
                continue
            found = min(self._count(a), self._count(b))
            if found >= 2 and found > score:
                best, score = (a, b), found
        return best

    def _best(self, suggestions: list, context: Sequence[str]) -> str:  # type: ignore[type-arg]
        """The suggestion found most often with the query's other words, then the most frequent."""
        if not self.context or not context or len(suggestions) == 1:
            return max(suggestions, key=lambda s: s.count).term
        together, others = self.vocabulary.together, list(context)
        return max(suggestions, key=lambda s: (together([s.term], others), s.count)).term

    def _correct(self, word: str, context: Sequence[str] = ()) -> tuple[str, str] | None:
        """(replacement, reason) for a word outside the vocabulary, or None to keep it.

        ``context``: the query's other words that the catalog knows."""
        if len(word) < 4 or not word.isalpha() or self.vocabulary.knows(word) or word in self.keep:
            return None
        from symspellpy import Verbosity

        found = self._speller().lookup(word, Verbosity.ALL, max_edit_distance=1 if len(word) <= 5 else 2)
        suggestions = sorted(found, key=lambda s: (s.distance, -s.count))[:MAX_SUGGESTIONS]
        close = [s for s in suggestions if s.distance <= 1]
        if close:  # one edit away: a typo
            return self._best(close, context), "spelling"
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
        return None

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

    def analyze(self, text: str, rewrite: bool = True) -> Analysis:
        """The analyzed query; with ``rewrite=False`` only normalized (nothing corrected)."""
        key = (text, rewrite)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        analysis = self._analyze(text, rewrite)
        with self._lock:
            self._cache[key] = analysis
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return analysis

    def _analyze(self, text: str, rewrite: bool) -> Analysis:
        normalized = normalize(text)
        tokens = TOKEN.findall(normalized)
        known = [t for t in tokens if t.isalpha() and len(t) > 2 and t not in UNITS and self.vocabulary.knows(t)]
        rewrites: list[Rewrite] = []
        out: list[str] = []
        for token in tokens:
            change = self._correct(token, known) if rewrite else None
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
