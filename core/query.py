"""What a search asks: the text, who asks, the request's filters and its deadline,
and what the query analyzer made of the text (:class:`Analysis`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Filters:
    """Request filters: every product a search returns matches them (:mod:`ranking.facts`).

    ``category`` and ``brand``: any of these values (empty: any); a single value may be given as
    a string. Prices are inclusive; a product without a price fails a price filter; a product
    whose stock is unknown counts as in stock.
    """

    category: tuple[str, ...] = ()
    brand: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None

    def __post_init__(self) -> None:
        for name in ("category", "brand"):
            value = getattr(self, name)
            if value is None or isinstance(value, str):
                object.__setattr__(self, name, () if value is None else (value,))
            else:
                object.__setattr__(self, name, tuple(value))

    def active(self) -> bool:
        return bool(self.category or self.brand or self.in_stock) or any(
            v is not None for v in (self.min_price, self.max_price))


@dataclass(frozen=True)
class Rewrite:
    """One change the analyzer made: ``original`` became ``replacement`` because of ``reason``
    (``spelling``: a word outside the catalog's vocabulary corrected to one in it; ``split``:
    a run-together word split into catalog words; ``synonym``: a rule of the store's synonyms)."""

    original: str
    replacement: str
    reason: str


@dataclass(frozen=True)
class Analysis:
    """The analyzed query (``retrieval.analyzer``), shared by retrieval, features and logs.

    Attributes:
        original: The text as the shopper typed it.
        text: The normalized and corrected text every stage searches with.
        tokens: ``text``'s words, in order.
        rewrites: What was corrected or split (empty: the text was only normalized).
        brand: Query words that name a brand of the catalog.
        product_type: Query words that name a product type of the catalog.
        numbers: Numbers with their unit (``"1/2 in"``, ``"18 volt"``) or alone.
    """

    original: str
    text: str
    tokens: tuple[str, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    brand: tuple[str, ...] = ()
    product_type: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    """What a stage may know about the request: the text, who asks, by when.

    ``deadline`` is a ``time.monotonic()`` value; stages that can be cancelled
    (the cross-encoders) stop there and raise ``StageTimeout``. The cascade sets
    ``analysis`` before the first stage runs and ``text`` to the analyzed text.
    """

    text: str
    user_id: str | None = None
    filters: Filters = field(default_factory=Filters)
    deadline: float | None = None
    rewrite: bool = True  # False: search the text as typed (only normalized), no spelling correction
    shed: bool = False  # the server is overloaded: skip the costly stages (cross-encoders), say so
    # Asked before a costly stage runs its model on pairs it finds uncached; True skips the stage (served in the
    # previous order, degraded "shed, budget"). Set by a server with a degrade budget (serving.skip_share).
    skip_model: Callable[[], bool] | None = None
    analysis: Analysis | None = None  # set by the first stage
    facets: tuple[str, ...] = ()  # counts the response carries: category, brand, price (ranking.facts)
    sort: str = "relevance"  # or price_asc / price_desc: the most relevant serving.sort_depth, by price
