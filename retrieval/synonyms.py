"""A store's synonyms, in the Solr / Elasticsearch file format, applied by the query analyzer.

One rule a line; ``#`` starts a comment; blank lines are skipped; an entry on several lines
searches what every one of them gives (``tv, television`` and ``tv, monitor``: ``tv`` searches
all three):

- ``fridge, refrigerator, icebox``: equivalent words. A query holding one of them searches
  all of them (``fridge`` -> ``fridge refrigerator icebox``): BM25 matches any, and the
  bi-encoder reads them together.
- ``aspiradora, vacuum cleaner => vacuum``: one way. A query holding a word on the left
  searches the right side instead (``aspiradora`` -> ``vacuum``).

Entries may be several words (``hand vac``) and are normalized as queries are (``1/2 inch``
is ``1/2 in``); the longest entry matching at a place wins. The analyzer applies the rules
to the words as typed, before spelling correction, and never corrects the words they put in:
a store's own words for a product (a brand nickname, another language's word) are not typos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from core import registry
from core.errors import InvalidInput, NotFound
from core.query import Rewrite
from retrieval.vocabulary import TOKEN, normalize

FORMS = "'a, b, c' (equivalent words) or 'a, b => c' (a or b searched as c)"


@dataclass(frozen=True)
class Synonyms:
    """Normalized entry -> the words searched in its place (one rule per entry)."""

    rules: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    @cached_property
    def longest(self) -> int:
        """Words in the longest entry (worked out once: :meth:`apply` reads it for every query)."""
        return max(map(len, self.rules), default=0)

    @cached_property
    def digest(self) -> str:
        """A short digest of the rules: what cached result pages depend on (not the file's path or time)."""
        text = "\n".join(f"{' '.join(k)}=>{' '.join(v)}" for k, v in sorted(self.rules.items()))
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "synonyms") -> Synonyms:
        """Rules from lines of the file format above; a malformed line is an error naming it."""
        rules: dict[tuple[str, ...], tuple[str, ...]] = {}
        for number, raw in enumerate(lines, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            sides = line.split("=>")
            if len(sides) > 2:
                raise InvalidInput(f"{source} line {number}: {raw.strip()!r} has more than one '=>'; a rule is {FORMS}")
            left = [_words(entry) for entry in sides[0].split(",")]
            right = [_words(entry) for entry in sides[1].split(",")] if len(sides) == 2 else left
            if not all(left) or not all(right) or (len(sides) == 1 and len(left) < 2):
                raise InvalidInput(f"{source} line {number}: {raw.strip()!r} is not a rule: {FORMS}, "
                                   "each entry one or more words")
            searched = tuple(word for entry in dict.fromkeys(right) for word in entry)
            for entry in left:  # an entry on several lines searches what each of them gives, as in Solr
                rules[entry] = tuple(dict.fromkeys((*rules.get(entry, ()), *searched)))
        return cls(rules, source)

    @classmethod
    def read(cls, path: str | Path) -> tuple[Synonyms, str]:
        """The rules of the file at ``path`` (``retrieval.synonyms``) and the digest of the bytes they
        were read from (:func:`file_digest`'s), so an edit made while reading is never missed."""
        file = Path(path)
        if not file.is_file():
            raise NotFound(f"synonyms file {file} does not exist (retrieval.synonyms names it)")
        data = file.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInput(f"synonyms file {file} is not UTF-8 text (byte {error.start}); "
                               "save it as UTF-8") from None
        return cls.parse(text.splitlines(), str(file)), hashlib.sha256(data).hexdigest()  # registry.file_digest's

    @classmethod
    def load(cls, path: str | Path) -> Synonyms:
        """The rules of the file at ``path``."""
        return cls.read(path)[0]

    def apply(self, tokens: Sequence[str], equivalents: bool = True) -> tuple[list[tuple[str, bool]], list[Rewrite]]:
        """``tokens`` with the rules applied: each word with whether a rule put it there, and the
        rewrites (reason ``synonym``). A rule's words are put in once: a second entry of the same rule
        in the query adds nothing (``hose hose`` does not list every kind of hose twice). Without
        ``equivalents``, only the one-way rules apply (an entry whose words its rule searches is left as it is)."""
        out: list[tuple[str, bool]] = []
        rewrites: list[Rewrite] = []
        applied: set[tuple[str, ...]] = set()
        start, longest = 0, self.longest
        while start < len(tokens):
            for size in range(min(longest, len(tokens) - start), 0, -1):
                entry = tuple(tokens[start : start + size])
                searched = self.rules.get(entry)
                if searched is not None:
                    if not equivalents and set(entry) <= set(searched):
                        out.extend((word, True) for word in entry)  # an equivalent word: as typed, still a rule's
                    elif searched not in applied:
                        applied.add(searched)
                        out.extend((word, True) for word in searched)
                        rewrites.append(Rewrite(" ".join(entry), " ".join(searched), "synonym"))
                    start += size
                    break
            else:
                out.append((tokens[start], False))
                start += 1
        return out, rewrites


def _words(entry: str) -> tuple[str, ...]:
    return tuple(TOKEN.findall(normalize(entry)))


def file_digest(path: str | Path | None) -> str | None:
    """A digest of the file at ``path`` (a synonyms file is small), to tell an edited file; None when
    ``path`` is not set or not a file."""
    if not path or not Path(path).is_file():
        return None
    return registry.file_digest(Path(path))

