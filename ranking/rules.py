"""Business rules applied after the model; every rule that touches a result says so.

In order:

1. **Filters** from the request (category, brand, price range, in stock only) drop
   rows. The first stage already searched only the products that match them
   (:mod:`ranking.facts`); here they are checked again on the stock, promotion and
   price read now.
2. **Out of stock**: ``hide`` drops, ``demote`` moves below every in-stock row,
   ``none`` leaves it.
3. **Promotion boost**: a promoted product's score rises by
   ``promo_boost x (score spread)`` with the spread = standard deviation of the
   scores in the list, so the boost is bounded relative to how sure the model
   is, and never more than ``max_promo_positions`` positions in effect.
4. **Hidden products**: ``hide`` (every search, listing and shelf) and a query's own
   ``hide`` drop them.
5. **A query's boost**: its products of the categories / brands it names go before the
   others (in stock first still).
6. **Pins and buries** per query: pinned products go first in their order (``pin_at``: each at
   its place), found by the first stage or not (a pin adds the product to the list when it is indexed and
   matches the request's filters; out of stock, it keeps its place with ``out_of_stock: demote``, noted
   pinned only, and is not shown with ``hide``); buried ones go to the end. A query's ``redirect``
   (a page of the store) is returned with its results (``SearchResponse.redirect``).
   A query's rule may hold from a ``start`` until an ``end`` (a sale's weekend).

A search sorted by price puts its rows in the prices' order: it applies no pin nor bury, and its
rows carry no rule notes (no place they note would hold). The filters, the hides, the out-of-stock
demotion and the boosts still apply: they choose which rows come first, and so which rows the
engine sorts by price when ``serving.sort_depth`` is below this stage's depth.

A rule's query is matched as the analyzer normalizes text (case, accents, units,
symbols: ``3/4 in. PVC`` and ``3/4" pvc`` are one rule), first against the text as
typed, then against the text searched after spelling correction.

:func:`apply_rules` returns the new order and, per row, the list of rule notes
shown in search explanations. :class:`RulesStage` is the last stage of a served
cascade: it reads each product's facts (:class:`ranking.facts.CatalogFacts`) for
every row the request may show, and applies the rules to them.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.errors import InvalidInput
from core.files import write_text_atomic
from core.query import Filters, Query
from ranking.cascade import Noted
from ranking.facts import ProductFacts
from retrieval.catalog import MAX_FACET_CHARS
from retrieval.types import Candidates
from retrieval.vocabulary import normalize

logger = logging.getLogger(__name__)

MAX_IDS = 1_000  # product ids in one list of a rule
class _RulesLoader(yaml.SafeLoader):
    """YAML as ``safe_load`` reads it, but a whole number stays the text written: a product id such as 0755
    or 01234567 is that id, not the octal number 493 (the settings that are numbers read the text as theirs)."""


_RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _id_text(value: object) -> object:
    """A product id YAML read as a number (``hide: [100001]``) as its text, as the catalog reader keeps ids."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


ProductId = Annotated[str, BeforeValidator(_id_text), StringConstraints(min_length=1, max_length=128)]
ProductIds = Annotated[list[ProductId], Field(max_length=MAX_IDS)]
Place = Annotated[int, Field(ge=1, le=1000)]


class Boost(BaseModel):
    """Products of these categories and brands (both when both are given; any value of a list), as a
    request's filters match them."""

    model_config = ConfigDict(extra="forbid")

    category: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_FACET_CHARS)]] = Field(
        default_factory=list, max_length=100)
    brand: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_FACET_CHARS)]] = Field(
        default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _something(self) -> Boost:
        if not self.category and not self.brand:
            raise ValueError("a boost names at least one category or brand")
        return self

    def filters(self) -> Filters:
        return Filters(category=tuple(self.category), brand=tuple(self.brand))


class QueryRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pin: ProductIds = Field(default_factory=list, description="Product ids shown first, in this order (added "
                            "when the search did not find them).")
    pin_at: dict[ProductId, Place] = Field(default_factory=dict, max_length=MAX_IDS, description="Product id -> "
                                           "the 1-based place it is shown at, 1..1000, one product a place (added "
                                           "when the search did not find it; the pins take the other first "
                                           "places), e.g. {P100831: 3}.")
    bury: ProductIds = Field(default_factory=list, description="Product ids moved below the other products of "
                             "the rules' rows (the first 100, or down to the farthest pin_at place).")
    hide: ProductIds = Field(default_factory=list, description="Product ids never shown for this query.")
    redirect: str | None = Field(None, min_length=1, max_length=2048, description="A page of the store this "
                                 "query should open (e.g. /help/returns), returned with the results.")
    boost: Boost | None = Field(None, description="Products of these categories / brands go before the others "
                                "(in stock first still; each group in the model's order).")
    start: datetime | None = Field(None, description="The rule holds from this time on (ISO 8601; UTC when no "
                                   "offset is given).")
    end: datetime | None = Field(None, description="The rule holds until this time (excluded).")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _distinct_places(self) -> QueryRule:
        first: dict[int, str] = {}
        for product, place in self.pin_at.items():
            if place in first:
                raise ValueError(f"pin_at puts {first[place]!r} and {product!r} both at place {place}: give each "
                                 "product a place of its own")
            first[place] = product
        return self

    @model_validator(mode="after")
    def _window(self) -> QueryRule:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"the rule ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")
        return self

    def holds(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_of_stock: Literal["hide", "demote", "none"] = "demote"
    promo_boost: float = Field(0.5, ge=0, le=5, description="Boost in units of the score spread.")
    max_promo_positions: int = Field(3, ge=0, le=100, description="Most positions a promotion can gain.")
    hide: list[ProductId] = Field(
        default_factory=list, max_length=100_000, description="Product ids never shown (searches, listings, shelves).")
    queries: dict[str, QueryRule] = Field(default_factory=dict, max_length=100_000,
                                          description="Pins, buries, hides and redirects by query.")

    @model_validator(mode="after")
    def _queries_normalized(self, info: ValidationInfo) -> RulesConfig:
        """Each query as the analyzer normalizes it; two that normalize alike, or one that leaves no word,
        are an error naming them. A saved file read with ``{"saved": True}`` as the context keeps the first
        of two that a newer normalization reads alike (``12,000 btu`` and ``12000 btu``), with a warning, so a
        store whose rules were valid when written still starts."""
        seen: dict[str, str] = {}
        saved = bool(info.context and info.context.get("saved"))
        for query in list(self.queries):
            key = normalise(query)
            if not key:
                raise ValueError(f"rule query {query!r} has no word left after normalization (case, units, "
                                 "symbols); give the words shoppers type")
            if key in seen and saved:
                logger.warning("rule queries %r and %r are the same query once normalized (%r): the rule of %r "
                               "is served, that of %r is not; merge them in the rules file", seen[key], query,
                               key, seen[key], query)
                del self.queries[query]
                continue
            if key in seen:
                raise ValueError(f"rule queries {seen[key]!r} and {query!r} are the same query once normalized "
                                 f"({key!r}); merge them")
            seen[key] = query
        return self

    @classmethod
    def from_file(cls, path: Path) -> RulesConfig:
        if not path.is_file():
            raise InvalidInput(f"rules file {path} does not exist")
        try:
            return cls.model_validate(yaml.load(path.read_text(encoding="utf-8"), Loader=_RulesLoader) or {},
                                      context={"saved": True})
        except UnicodeDecodeError as error:
            raise InvalidInput(f"rules file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8, or "
                               "replace it through PUT /v1/admin/rules") from None
        except yaml.YAMLError as error:
            raise InvalidInput(f"rules file {path} is not YAML: {error}") from None
        except ValidationError as error:
            bad = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']} (got {e.get('input')!r})"
                            for e in error.errors())
            raise InvalidInput(f"rules file {path} is not valid: {bad}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_defaults=True), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        """Write the rules at ``path`` as YAML (atomic: a reader sees the old file or the new one)."""
        write_text_atomic(path, self.to_yaml())

    def product_ids(self) -> list[str]:
        """Every product id the rules name, once."""
        rules = self.queries.values()
        return list(dict.fromkeys([*self.hide, *(p for r in rules for p in (*r.pin, *r.pin_at, *r.bury, *r.hide))]))

    @cached_property
    def by_query(self) -> dict[str, QueryRule]:
        return {normalise(q): r for q, r in self.queries.items()}

    def rule_for(self, query: Query, now: datetime | None = None) -> QueryRule | None:
        """The rule of ``query`` that holds ``now`` (default: the current time): its text as typed,
        normalized, else the text it searched (corrected)."""
        if not self.queries:
            return None
        typed = query.analysis.original if query.analysis is not None else query.text
        now = now or datetime.now(timezone.utc)
        for text in (typed, query.text):  # the typed text's rule, unless it does not hold now
            rule = self.by_query.get(normalise(text))
            if rule is not None and rule.holds(now):
                return rule
        return None


@dataclass
class RuleResult:
    order: np.ndarray  # positions into the input list, new order
    notes: list[list[str]] = field(default_factory=list)  # per output row


def normalise(query: str) -> str:
    """A rule's query and a searched text as the analyzer normalizes them (``retrieval.vocabulary.normalize``)."""
    return " ".join(normalize(query).split())


def apply_rules(rule: QueryRule | None, product_ids: list[str], scores: np.ndarray, in_stock: np.ndarray,
                promoted: np.ndarray, config: RulesConfig, keep: np.ndarray | None = None,
                lift: np.ndarray | None = None) -> RuleResult:
    """Apply the rules (``rule``: the query's own, if any) to a scored list (best first); ``keep``: the
    rows that match the request's filters (None: all); ``lift``: the rows ``rule.boost`` matches."""
    n = len(product_ids)
    notes: list[list[str]] = [[] for _ in range(n)]
    keep = np.ones(n, dtype=bool) if keep is None else np.array(keep, dtype=bool)
    stocked = np.nan_to_num(in_stock, nan=1.0) > 0
    if config.out_of_stock == "hide":
        keep &= stocked
    hidden = set(config.hide) | set(rule.hide if rule else ())
    if hidden:
        keep &= np.array([p not in hidden for p in product_ids], dtype=bool)
    adjusted = np.asarray(scores, dtype=np.float64).copy()
    spread = float(np.nanstd(adjusted[keep])) if keep.sum() > 1 else 0.0
    boosted = keep & (np.nan_to_num(promoted) > 0)
    kept = np.flatnonzero(keep)
    by_score = [int(i) for i in kept[np.lexsort((kept, -adjusted[kept]))]]  # ties: the list's own order
    if config.promo_boost and spread > 0 and boosted.any():
        bonus = config.promo_boost * spread
        effective = adjusted + np.where(boosted, bonus, 0.0)  # promoted rows keep their order among themselves
        for i in [i for i in by_score if boosted[i]]:  # best first
            # up past the rows its boosted score beats, at most max_promo_positions of them (counted in places:
            # a score just above the row k places up also passed every row tied with it)
            at = by_score.index(i)
            to = at
            while to > 0 and at - to < config.max_promo_positions and effective[by_score[to - 1]] < effective[i]:
                to -= 1
            if to < at:
                by_score.insert(to, by_score.pop(at))
                notes[i].append(f"promotion_boost(+{at - to} places)")
    place = np.zeros(n, dtype=np.int64)
    place[by_score] = np.arange(len(by_score))
    position = {pid: i for i, pid in enumerate(product_ids)}
    pinned = [position[p] for p in dict.fromkeys(rule.pin if rule else ()) if p in position and keep[position[p]]]
    placed = {position[p]: at for p, at in (rule.pin_at.items() if rule else ())
              if p in position and keep[position[p]] and position[p] not in pinned}
    held = set(pinned) | set(placed)  # rows at a pin's place, in stock or not
    demoted = keep & ~stocked if config.out_of_stock == "demote" else np.zeros(n, dtype=bool)
    for i in np.flatnonzero(demoted):
        if i not in held:
            notes[i].append("out_of_stock_demoted")
    rows = np.flatnonzero(keep)
    lifted = keep & lift if lift is not None else np.zeros(n, dtype=bool)
    for i in np.flatnonzero(lifted):
        notes[i].append("boosted")
    rows = rows[np.lexsort((place[rows], ~lifted[rows], demoted[rows]))]
    if rule and (rule.pin or rule.pin_at or rule.bury):
        buried = {position[p] for p in rule.bury if p in position} - held  # a pin wins
        for i in buried:
            notes[i].append("buried")
        middle = [i for i in rows if i not in held and i not in buried]
        order = pinned + middle + [i for i in rows if i in buried]
        for i, at in sorted(placed.items(), key=lambda item: (item[1], item[0])):  # each at its place, in turn
            order.insert(min(at - 1, len(order)), i)
        for slot, i in enumerate(order):  # the places they ended at (a pin_at before a pin moves the pin down)
            if i in held:
                notes[i].append(f"pinned({slot + 1})")
        rows = np.array(order, dtype=np.int64)
    return RuleResult(order=rows, notes=[notes[i] for i in rows])


@dataclass(frozen=True)
class RulesStage:
    """Business rules after the model (:mod:`ranking.rules`); records notes per product.

    ``doc_of`` finds a pinned product the first stage did not return (the index's
    ``doc_of``); without it, a pin only moves a product the list holds."""

    config: RulesConfig
    facts: Callable[[Candidates], ProductFacts]
    depth: int = 100
    name: str = "rules"
    skippable: bool = False  # filters and business rules run even when the request's budget is spent
    doc_of: Callable[[str], int | None] | None = None

    def __call__(self, query: Query, candidates: Candidates) -> Noted:
        """Rules over the first ``depth`` rows (down to the farthest ``pin_at`` place of the query's rule; stock,
        promotion and price read now) and the query's
        pinned products; the rest follow in their order (offline evaluation still sees a full-depth
        list), less the rows whose facts as last built (:meth:`ranking.facts.CatalogFacts.known`) fail
        the filters or, with ``out_of_stock: hide``, are out of stock, and the hidden products. A row's
        place never depends on how many rows a request asks for, so the pages of a search agree at any offset.
        A search sorted by price gets no pin nor bury, and no note: the price order re-sorts the rows the other
        rules chose (out-of-stock rows demoted, promotions and a query's boost lifted, which decides the rows
        the engine sorts by price when ``serving.sort_depth`` is below this stage's depth)."""
        rule = self.config.rule_for(query) if query.text else None
        by_price = query.sort != "relevance"
        if by_price and rule is not None:  # a price order has no places to pin or bury at
            rule = rule.model_copy(update={"pin": [], "pin_at": {}, "bury": []})
        farthest = max(rule.pin_at.values()) if rule is not None and rule.pin_at else 0
        depth = base = max(self.depth, farthest)
        while True:  # a pin_at place is in the head, counted after the rows the rules drop from it
            head, tail = candidates.top(depth), candidates.take(slice(depth, None))
            if rule is not None and (rule.pin or rule.pin_at):
                head, tail = self._with_pins([*rule.pin, *rule.pin_at], head, tail)
            facts = self.facts(head)
            score = np.nan_to_num(head.score, nan=float(np.nanmin(head.score)) if np.isfinite(head.score).any()
                                  else 0.0)
            keep = facts.matching(query.filters) if query.filters.active() else None
            boosted = facts.matching(rule.boost.filters()) if rule is not None and rule.boost is not None else None
            result = apply_rules(rule, head.product_ids, score, facts.in_stock, facts.promoted, self.config, keep,
                                 boosted)
            short = farthest - len(result.order)  # hidden, filtered or out-of-stock rows left the head short
            if short <= 0 or not len(tail):
                break
            # the rows it lacks, then twice as deep each time: a filter that leaves few rows (every row below
            # dropped) takes a few reads, not one a row (10,000 rows took 40 s)
            depth += short if depth == base else max(short, depth)
        reordered = head.take(result.order)
        # a price order keeps the rows the moves bring to the top (serving.sort_depth may sort fewer rows than
        # these), but re-sorts them, so no note of a place holds
        notes = {} if by_price else {pid: n for pid, n in zip(reordered.product_ids, result.notes) if n}
        if len(tail):
            hide = self.config.out_of_stock == "hide"
            hidden = set(self.config.hide) | set(rule.hide if rule else ())
            if query.filters.active() or hide:
                known = getattr(self.facts, "known", self.facts)(tail)
                keep = known.matching(query.filters) & (known.stocked if hide else True)
                tail = tail.take(np.flatnonzero(keep))
            if hidden:
                tail = tail.take(np.flatnonzero([p not in hidden for p in tail.product_ids]))
            reordered = reordered.then(tail)
        return Noted(reordered, notes)

    def _with_pins(self, pins: list[str], head: Candidates, tail: Candidates) -> tuple[Candidates, Candidates]:
        """``head`` with the pinned products it lacks (moved up from ``tail``, else added from the index,
        their scores unknown), and ``tail`` without them."""
        present = set(head.product_ids)
        wanted = [p for p in dict.fromkeys(pins) if p not in present]
        if not wanted:
            return head, tail
        below = {p: i for i, p in enumerate(tail.product_ids) if p in set(wanted)}
        if below:
            head = head.then(tail.take(np.array(sorted(below.values()), dtype=np.int64)))
            tail = tail.take(np.flatnonzero([p not in below for p in tail.product_ids]))
        find = self.doc_of or (lambda product_id: None)
        added = [(p, d) for p in wanted if p not in below and (d := find(p)) is not None]
        if added:
            docs = np.array([d for _, d in added], dtype=np.int64)
            nan = np.full(len(added), np.nan, dtype=np.float32)
            head = head.then(Candidates(docs, [p for p, _ in added], head.stage, {head.stage: nan},
                                        {head.stage: np.zeros(len(added), dtype=np.int32)}))
        return head, tail

    def farthest_place(self, query: Query) -> int:
        """The farthest ``pin_at`` place of ``query``'s rule (0: none): a search reads at least that deep, so the
        product is at its place whichever page is asked for."""
        rule = self.config.rule_for(query) if query.text and query.sort == "relevance" else None
        return max(rule.pin_at.values(), default=0) if rule is not None else 0

    def windows_passed(self, now: datetime | None = None) -> int:
        """How many of the rules' start and end times are past ``now`` (default: the current time): a page
        cached while one rule held is not served once it ends (or before it starts)."""
        return bisect.bisect_right(self._bounds, now or datetime.now(timezone.utc))

    @cached_property
    def _bounds(self) -> list[datetime]:
        return sorted(t for rule in self.config.queries.values() for t in (rule.start, rule.end) if t is not None)

    def redirect(self, query: Query) -> str | None:
        """The page the rules send ``query`` to, if any."""
        rule = self.config.rule_for(query) if query.text else None
        return rule.redirect if rule is not None else None

    def hidden_docs(self, query: Query | None = None) -> np.ndarray:
        """The documents of the products hidden everywhere (``hide``), and with ``query`` those its own
        rule hides, that the index holds."""
        rule = self.config.rule_for(query) if query is not None and query.text else None
        hidden = [*self.config.hide, *(rule.hide if rule is not None else ())]
        if not hidden or self.doc_of is None:
            return np.zeros(0, dtype=np.int64)
        return np.array([d for p in dict.fromkeys(hidden) if (d := self.doc_of(p)) is not None], dtype=np.int64)
