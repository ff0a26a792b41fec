"""The catalog's words: the normalization shared by the index and the queries, and the
:class:`Vocabulary` the query analyzer (:mod:`retrieval.analyzer`) corrects against.

:func:`normalize` is applied to product text when the index is built and to every
query: case and Latin accents (``Café`` -> ``cafe``; other scripts' letters are kept), unicode
fractions (``½`` -> ``1/2``, ``1½`` -> ``1 1/2`` as ``1-1/2`` reads), a leading decimal point
(``.5`` -> ``0.5``), units and their spellings after a
number (``1/2 in.``, ``1/2 inch`` and ``1/2"`` all become ``1/2 in``; ``12v``,
``12-Volt`` -> ``12 volt``; ``lbs``, ``gallons``, ``sq. ft.``, ...), dimensions
(``2x4`` -> ``2 x 4``, ``12"x24"`` -> ``12 in x 24 in``), hyphens and symbols. Words are compared
by their Snowball stem (:func:`stem`, the BM25 index's stemmer).

The :class:`Vocabulary` holds the catalog's word counts, its brand and product-type
words (from ``brand`` / ``category`` columns, else from where words sit in titles) and
which products hold each stem. It is built from the live catalog when the index is
built or changed, and stored with it (``vocabulary.json``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import regex

VERSION = 7  # bump when normalize() or the vocabulary file changes: indexes record it and are rebuilt

_UNITS = [  # (pattern after a number, canonical unit)
    # NFKC reads ″ as ′′: two primes (or two closing quotes) are inches, one is feet
    # a unit word ends where the word does, or at a dimension's x or a number (12 inchx24, 2 feet6 in)
    (r'(?:"|”|″|′′|’’|\'\'|inch(?:e?s)?(?![a-wyz])|in\b\.?)', "in"),
    # an apostrophe and s is no foot but a plural or a decade (2x4's, 1950's)
    (r"(?:'(?!s\b)|’(?!s\b)|′|f(?:ee|oo)ts?(?![a-wyz])|ft\b\.?)", "ft"),
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
# the words normalized units and dimensions are written with (``sq`` of ``sq ft``, the ``x`` of ``2 x 4``): no
# product or brand word, and no piece of a word split in two
UNIT_WORDS = frozenset(word for unit in UNITS for word in unit.split()) | {"x"}
# words that join others (``black and decker``, ``tools for garden``): no brand or product-type word
JOINING_WORDS = frozenset({"a", "an", "and", "as", "at", "by", "for", "from", "in", "is", "no", "not", "of", "on",
                           "only", "or", "per", "the", "to", "with", "without"})
_NUMBER = r"(\d+(?:\.\d+)?(?: \d+/\d+|/\d+)?)"
_UNIT_RES = [(re.compile(_NUMBER + r"\s*-?\s*" + pattern, re.IGNORECASE), unit) for pattern, unit in _UNITS]
_NUMBER_WITH_UNIT = re.compile(_NUMBER + r"(?: (" + "|".join(re.escape(u) for u in UNITS) + r")\b)?")
_EMPTY = np.zeros(0, dtype=np.int32)
# a word's characters: letters, digits and combining marks (Devanagari's and Thai's vowel signs belong to their
# word); BM25's tokenizer splits at the same characters
WORD_CHARS = r"\p{L}\p{N}\p{M}"
TOKEN = regex.compile(rf"[\p{{L}}\p{{N}}][{WORD_CHARS}]*(?:[./][0-9]+)*")  # a word starts with a letter or digit
_NOT_WORD = regex.compile(rf"[^{WORD_CHARS}./]+")
_LETTERS = regex.compile(r"\p{L}[\p{L}\p{M}]*")
_WORD_CHAR = regex.compile(rf"[{WORD_CHARS}]")
# soft hyphen, zero-width joiners, direction marks: deleted; a zero-width space is a space (Thai and Khmer text
# break words with it)
_INVISIBLE = regex.compile(r"\p{Cf}")
# a number grouped in thousands (12,000 or 1,500,000; not a list such as 600,900,1500, nor 0.5,125)
_THOUSANDS = re.compile(r"(?<![\d.,/])\d{1,3}(?:,\d{3})+(?!\d|,\d)")
_LATIN_MARK = re.compile(r"(?<=[a-z\u00c0-\u024f])[\u0300-\u036f]+")  # accents on a Latin letter, decomposed
_VULGAR_AFTER_DIGIT = re.compile(r"(\d)([\u00bc-\u00be\u2150-\u215e])")  # 1½, 7¼
_DIGIT = re.compile(r"\d")
_DIMENSION_AFTER_UNIT = re.compile(r"\b(" + "|".join(re.escape(u) for u in UNITS) + r") x\s*(?=\d)")


def is_word(token: str) -> bool:
    """Whether ``token`` is letters only, with their combining marks (``str.isalpha`` is False for a Devanagari
    word: its vowel signs are marks): a word, not a number or a model code."""
    return token.isalpha() or _LETTERS.fullmatch(token) is not None  # the fast test first: most words pass it


def _named(word: str) -> bool:
    """Whether a word of a brand or category value names it: letters, not a joining or unit word (the ``and``
    of ``Black & Decker``)."""
    return is_word(word) and word not in JOINING_WORDS and word not in UNIT_WORDS


def word_char(char: str) -> bool:
    """Whether ``char`` belongs to a word: a letter, a digit or a combining mark."""
    return _WORD_CHAR.fullmatch(char) is not None


def visible(text: str) -> str:
    """``text`` without its invisible format characters (a soft hyphen, a zero-width joiner, a direction mark);
    a zero-width space is a space."""
    return _INVISIBLE.sub("", text.replace("\u200b", " "))


def fold(text: str) -> str:
    """Case and Latin accents folded (``Größe`` -> ``grosse``, ``Café`` -> ``cafe``); letters of other scripts
    (Cyrillic, Greek, CJK, Devanagari, Thai) kept as they are, with their combining marks, so their words
    stay whole and searchable."""
    text = visible(text)
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return unicodedata.normalize("NFC", _LATIN_MARK.sub("", text))


def normalize(text: str) -> str:
    """Lowercase, canonical units and fractions, no symbols (see the module docstring)."""
    text = _VULGAR_AFTER_DIGIT.sub(r"\1 \2", text)  # 1½ -> 1 ½, so it reads 1 1/2 and not 11/2
    text = fold(text).replace("\u2044", "/").replace("\u00d7", "x")  # fraction slash; 2×4 as 2x4
    text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    text = re.sub(r"(?<![\w.])\.(\d)", r"0.\1", text)  # .5 in -> 0.5 in
    text = re.sub(r"(\d)\s*-\s*(\d+/\d+)", r"\1 \2", text)  # 1-1/2 -> 1 1/2
    text = re.sub(r"(\d)\s*/\s*(\d)", r"\1/\2", text)
    text = _units(text)
    text = text.replace("&", " and ")
    text = re.sub(r"(?<!\d)[./]|[./](?!\d)", " ", text)  # keep . and / only between digits
    text = _NOT_WORD.sub(" ", text)  # letters, marks and digits of any script, . and / between digits
    # again without the symbols: a unit or dimension they stood in (1/2 (inch), 18, v, 000x.5) reads as one typed
    # without them, so a normalized text normalizes to itself
    text = _units(re.sub(r"\s+", " ", text))
    return re.sub(r"\s+", " ", text).strip()


def _units(text: str) -> str:
    """Dimensions and the units after a number spelled one way (``2x4`` -> ``2 x 4``, ``1/2"`` -> ``1/2 in``)."""
    if not _DIGIT.search(text):  # every pattern needs a digit, which most queries lack
        return text
    text = re.sub(r"(\d)\s*x\s*(?=\d)", r"\1 x ", text)  # 2x4 -> 2 x 4
    for pattern, unit in _UNIT_RES:
        text = pattern.sub(lambda m, u=unit: f"{m.group(1)} {u} ", text)
    return _DIMENSION_AFTER_UNIT.sub(r"\1 x ", text)  # 12"x24" -> 12 in x 24 in


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


def common(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ids two sorted id arrays share: the shorter looked up in the longer (no sort of both)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if not len(small) or not len(large):
        return small[:0]
    at = np.minimum(np.searchsorted(large, small), len(large) - 1)
    return small[large[at] == small]


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
        """Whether the catalog holds ``word``: in a title or description, or a brand's or category's name (the
        analyzer never corrects it)."""
        return (word in self.counts or stem(word) in self.stems or word in self.brands or word in self.types
                or stem(word) in self.type_stems)

    def _docs(self, word: str) -> np.ndarray:
        return self.postings.get(stem(word), _EMPTY)

    def docs_of(self, word: str) -> np.ndarray:
        """The products (sorted doc ids) that hold ``word``'s stem."""
        return self._docs(word)

    def together(self, words: Sequence[str], any_of: Sequence[str] = ()) -> int:
        """Products holding every one of ``words`` and, when given, one of ``any_of`` (by stem)."""
        found = self._docs(words[0]) if words else _EMPTY
        for word in words[1:]:
            found = common(found, self._docs(word))
        if any_of and len(found):
            found = common(found, np.unique(np.concatenate([self._docs(w) for w in any_of])))
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
            alpha = [w for w in words if is_word(w) and w not in UNIT_WORDS]
            if alpha:
                first[alpha[0]] += 1
                last[alpha[-1]] += 1
        brand_words = {w for b in brands or () if isinstance(b, str) for w in tokenize(b) if _named(w)}
        if not brand_words:  # words that mostly lead titles: brands in most storefront catalogs
            brand_words = {w for w, n in first.items() if n >= min_count and n >= 0.6 * counts[w]}
        type_words = {w for c in categories or () if isinstance(c, str) for w in tokenize(c) if _named(w)}
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
