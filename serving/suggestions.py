"""Query suggestions for a served index (``/v1/suggest``; :mod:`retrieval.suggest`).

:func:`suggest` reads the words typed before the last one as a search would (spelling-corrected
by the index's analyzer: ``cordles dr`` -> ``cordless drill``), and a last word that matches
nothing as a whole, corrected word (``cordlss`` -> ``cordless``). The catalog's phrases are worked
out once per index state (a server starts it in the background when it loads: ~4 s on 54,667
products), and the shoppers' searched texts are read from ``<home>/suggest/searches.json``
(``shoprank suggestions``, nightly) again when the file changes. After an index write or a new
file, the suggester in use keeps answering while the next one is made in the background.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.files import write_text_atomic
from retrieval.index import ProductIndex
from retrieval.suggest import JOINING, Suggester, Suggestion, catalog_phrases
from retrieval.suggest import suggest as suggest_with
from retrieval.vocabulary import TOKEN, common, normalize

if TYPE_CHECKING:
    from serving.engine import SearchEngine

logger = logging.getLogger(__name__)

_lock = threading.Lock()  # held while a suggester is made
_making_lock = threading.Lock()
# index -> ((its writes, the searched file's state), its catalog phrases, the suggester made from them)
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_making: weakref.WeakSet = weakref.WeakSet()  # indexes whose suggester is being made again
# product facts -> ((their build, the rules' hide), the products hidden from the suggestions)
_hidden: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def file_state(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0, 0
    return stat.st_mtime_ns, stat.st_size


# what reading a JSON file of a nightly job raises when a write was cut short or another version wrote it
DAMAGED = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)


def read_searched(path: Path) -> dict[str, int]:
    """The searched texts and their shoppers in ``path`` (none when it does not exist)."""
    if not path.is_file():
        return {}
    try:  # a file that does not read leaves the catalog's phrases
        return {str(text): int(n) for text, n in json.loads(path.read_text())["searches"].items()}
    except (OSError, *DAMAGED) as error:
        logger.warning("searched texts %s are not readable (%s: %s); suggesting catalog phrases only until "
                       "`shoprank suggestions` writes it again", path, type(error).__name__, error)
        return {}


def write_searched(path: Path, searches: dict[str, int], **about: object) -> None:
    """Save the searched texts (atomic), with what they were counted from (``about``)."""
    write_text_atomic(path, json.dumps({**about, "texts": len(searches), "searches": searches}, indent=1,
                                       sort_keys=True))


def _kept(index: ProductIndex, searched: Path,
          hidden: frozenset[str]) -> tuple[tuple[tuple[int, frozenset[str]], tuple[int, int]], tuple | None]:
    """What a suggester of ``index`` is made from now (the index's writes and the products the rules
    hide, the searched file's state), and the kept entry."""
    return ((index.generation, hidden), file_state(searched)), _cache.get(index)


def suggester(index: ProductIndex, searched: Path, wait: bool = False,
              hidden: frozenset[str] = frozenset()) -> Suggester:
    """The suggester of ``index`` with the searched texts of ``searched``; the catalog's phrases leave out
    the titles of ``hidden`` products (the business rules' ``hide``). The first one is made now; after an
    index write, a new searched file or another ``hidden``, the one in use keeps serving while its
    successor is made in the background (``wait``: made now)."""
    made_from, found = _kept(index, searched, hidden)
    if found is not None and found[0] == made_from:
        return found[2]
    if found is not None and not wait:
        with _making_lock:  # never the build lock: the suggester in use answers at once
            if index not in _making:
                _making.add(index)
                threading.Thread(target=_remake, args=(index, searched, hidden), name="suggest-remake",
                                 daemon=True).start()
        return found[2]
    with _lock:
        return _make(index, searched, hidden)


def _make(index: ProductIndex, searched: Path, hidden: frozenset[str]) -> Suggester:
    """The suggester for ``index`` and ``searched`` as they are now, kept (call with ``_lock`` held)."""
    made_from, found = _kept(index, searched, hidden)
    if found is not None and found[0] == made_from:
        return found[2]
    same_catalog = found is not None and found[0][0] == made_from[0]
    phrases = found[1] if same_catalog else _catalog(index, hidden)  # type: ignore[index]
    made = Suggester(phrases, _not_only_hidden(index, read_searched(searched), hidden))
    _cache[index] = (made_from, phrases, made)
    return made


def _remake(index: ProductIndex, searched: Path, hidden: frozenset[str]) -> None:
    try:
        with _lock:
            _make(index, searched, hidden)
    except Exception:  # noqa: BLE001 - the suggester in use keeps serving; the next call tries again
        logger.exception("making the query suggestions again failed")
    finally:
        with _making_lock:
            _making.discard(index)


def _catalog(index: ProductIndex, hidden: frozenset[str]) -> dict[str, int]:
    started = time.perf_counter()
    live = index.live_products()
    if hidden:
        live = live[~live["product_id"].isin(hidden)]
    phrases = catalog_phrases(live["title"].tolist())
    logger.info("query suggestions: %d catalog phrases from %d products in %.1f s", len(phrases), len(live),
                time.perf_counter() - started)
    return phrases


def _not_only_hidden(index: ProductIndex, searches: dict[str, int], hidden: frozenset[str]) -> dict[str, int]:
    """``searches`` without the texts that name only products no shopper finds: every word of the text is in the
    title of a hidden or a deleted product (a recalled model's name, a product taken out of the catalog), and no
    live product's title that is not hidden holds them all."""
    if not searches:
        return searches
    products = index.products
    gone = ~products["live"].to_numpy(dtype=bool) | products["product_id"].isin(hidden).to_numpy(dtype=bool)
    if not gone.any():
        return searches

    @lru_cache(maxsize=None)  # an updated product's deleted rows repeat its title
    def words(text: str) -> frozenset[str]:
        return frozenset(w for w in TOKEN.findall(normalize(text)) if w not in JOINING)

    texts = {text: w for text in searches if (w := words(text))}
    titles = products["title"].tolist()

    def holding(rows: np.ndarray, wanted: frozenset[str]) -> dict[str, set[int]]:  # word -> the rows holding it
        held: dict[str, set[int]] = {w: set() for w in wanted}
        for row in rows.tolist():
            for word in words(titles[row]) & wanted:
                held[word].add(row)
        return held

    in_gone = holding(np.flatnonzero(gone), frozenset().union(*texts.values()))
    named = {text: w for text, w in texts.items() if set.intersection(*(in_gone[x] for x in w))}
    if not named:
        return searches
    postings, shown = index.vocabulary.postings, np.flatnonzero(~gone)

    def shown_holding(wanted: frozenset[str]) -> bool:
        """Whether a shown product's title holds every word of ``wanted``: the titles read are only those the
        vocabulary's postings (live products, by stem: a superset) name for all of them, not the whole catalog."""
        rows = shown
        if postings:
            for word in wanted:
                rows = common(rows, index.vocabulary.docs_of(word))
        return any(wanted <= words(titles[row]) for row in rows.tolist())

    only_gone = {text for text, w in named.items() if not shown_holding(w)}
    return {text: n for text, n in searches.items() if text not in only_gone}


def hidden_products(engine: SearchEngine) -> frozenset[str]:
    """The products a search never shows, whose titles give no suggestion: those the business rules hide
    everywhere (``hide``) and, with ``out_of_stock: hide``, the live products out of stock as the product facts
    were last built. Worked out once a build of the facts: a stock change is another set, so another suggester."""
    rules = engine.rules
    if rules is None:
        return frozenset()
    if rules.config.out_of_stock != "hide" or engine.facts is None:
        return frozenset(rules.config.hide)
    key = (engine.facts.version, tuple(rules.config.hide))
    kept = _hidden.get(engine.facts)
    if kept is None or kept[0] != key:
        products, stocked = engine.index.products, engine.facts.table().stocked
        rows = min(len(products), len(stocked))
        out = products["live"].to_numpy(dtype=bool)[:rows] & ~stocked[:rows]
        kept = (key, frozenset(rules.config.hide) | frozenset(products["product_id"].to_numpy()[:rows][out].tolist()))
        _hidden[engine.facts] = kept
    return kept[1]


def suggest(index: ProductIndex, searched: Path, typed: str, k: int,
            hidden: frozenset[str] = frozenset(), spelling: bool = True) -> list[Suggestion]:
    """Up to ``k`` suggestions for ``typed``, read as the search would read it (:func:`retrieval.suggest.suggest`);
    ``hidden``: products whose titles give no catalog phrase; ``spelling``: ``retrieval.spelling``."""
    return suggest_with(suggester(index, searched, hidden=hidden), index.analyzer, typed, k, spelling)
