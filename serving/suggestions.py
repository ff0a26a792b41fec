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
from pathlib import Path

from core.files import write_text_atomic
from retrieval.index import ProductIndex
from retrieval.suggest import JOINING, Suggester, Suggestion, catalog_phrases
from retrieval.suggest import suggest as suggest_with
from retrieval.vocabulary import TOKEN, normalize

logger = logging.getLogger(__name__)

_lock = threading.Lock()  # held while a suggester is made
_making_lock = threading.Lock()
# index -> ((its writes, the searched file's state), its catalog phrases, the suggester made from them)
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_making: weakref.WeakSet = weakref.WeakSet()  # indexes whose suggester is being made again


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
    """``searches`` without the texts that name only hidden products: every word of the text is in a hidden
    product's title, and no other live product's title holds them all (a recalled model's name)."""
    if not hidden or not searches:
        return searches
    live = index.live_products()
    is_hidden = live["product_id"].isin(hidden)

    def words(text: str) -> frozenset[str]:
        return frozenset(w for w in TOKEN.findall(normalize(text)) if w not in JOINING)

    gone = [words(t) for t in live.loc[is_hidden, "title"].tolist()]
    named = {text: w for text in searches if (w := words(text)) and any(w <= title for title in gone)}
    if not named:
        return searches
    wanted = frozenset().union(*named.values())
    holding: dict[str, set[int]] = {w: set() for w in wanted}  # word -> the visible titles that hold it
    for row, title in enumerate(live.loc[~is_hidden, "title"].tolist()):
        for word in words(title) & wanted:
            holding[word].add(row)
    only_hidden = {text for text, w in named.items() if not set.intersection(*(holding[x] for x in w))}
    return {text: n for text, n in searches.items() if text not in only_hidden}


def suggest(index: ProductIndex, searched: Path, typed: str, k: int,
            hidden: frozenset[str] = frozenset(), spelling: bool = True) -> list[Suggestion]:
    """Up to ``k`` suggestions for ``typed``, read as the search would read it (:func:`retrieval.suggest.suggest`);
    ``hidden``: products whose titles give no catalog phrase; ``spelling``: ``retrieval.spelling``."""
    return suggest_with(suggester(index, searched, hidden=hidden), index.analyzer, typed, k, spelling)
