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
4. **Pins and buries** per query (normalised text): pinned products go to their
   positions, buried ones to the end.

:func:`apply_rules` returns the new order and, per row, the list of rule notes
shown in search explanations. :class:`RulesStage` is the last stage of a served
cascade: it reads each product's facts (:class:`ranking.facts.CatalogFacts`) for
every row the request may show, and applies the rules to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput
from core.query import Query
from ranking.cascade import Noted
from ranking.facts import ProductFacts
from retrieval.types import Candidates


class QueryRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pin: list[str] = Field(default_factory=list, description="Product ids, shown first in this order.")
    bury: list[str] = Field(default_factory=list, description="Product ids moved to the end.")


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_of_stock: Literal["hide", "demote", "none"] = "demote"
    promo_boost: float = Field(0.5, ge=0, le=5, description="Boost in units of the score spread.")
    max_promo_positions: int = Field(3, ge=0, le=100, description="Most positions a promotion can gain.")
    queries: dict[str, QueryRule] = Field(default_factory=dict, description="Pins and buries by query.")

    @classmethod
    def from_file(cls, path: Path) -> RulesConfig:
        if not path.is_file():
            raise InvalidInput(f"rules file {path} does not exist")
        config = cls.model_validate(yaml.safe_load(path.read_text()) or {})
        return config.model_copy(update={"queries": {normalise(q): r for q, r in config.queries.items()}})


@dataclass
class RuleResult:
    order: np.ndarray  # positions into the input list, new order
    notes: list[list[str]] = field(default_factory=list)  # per output row


def normalise(query: str) -> str:
    return re.sub(r"\s+", " ", query.strip().lower())


def apply_rules(query: str, product_ids: list[str], scores: np.ndarray, in_stock: np.ndarray,
                promoted: np.ndarray, config: RulesConfig, keep: np.ndarray | None = None) -> RuleResult:
    """Apply the rules to a scored list (best first); ``keep``: the rows that match the request's
    filters (None: all)."""
    n = len(product_ids)
    notes: list[list[str]] = [[] for _ in range(n)]
    keep = np.ones(n, dtype=bool) if keep is None else np.array(keep, dtype=bool)
    stocked = np.nan_to_num(in_stock, nan=1.0) > 0
    if config.out_of_stock == "hide":
        keep &= stocked
    adjusted = np.asarray(scores, dtype=np.float64).copy()
    spread = float(np.nanstd(adjusted[keep])) if keep.sum() > 1 else 0.0
    boosted = keep & (np.nan_to_num(promoted) > 0)
    if config.promo_boost and spread > 0 and boosted.any():
        ordered = np.sort(adjusted[keep])[::-1]
        for i in np.flatnonzero(boosted):
            rank = int((ordered > adjusted[i]).sum())
            ceiling = ordered[max(0, rank - config.max_promo_positions)]
            bonus = min(config.promo_boost * spread, max(0.0, ceiling - adjusted[i]) + 1e-9)
            adjusted[i] += bonus
            notes[i].append(f"promotion_boost(+{bonus:.4f})")
    demoted = keep & ~stocked if config.out_of_stock == "demote" else np.zeros(n, dtype=bool)
    for i in np.flatnonzero(demoted):
        notes[i].append("out_of_stock_demoted")
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((rows, -adjusted[rows], demoted[rows]))]
    rule = config.queries.get(normalise(query))
    if rule:
        position = {pid: i for i, pid in enumerate(product_ids)}
        pinned = [position[p] for p in rule.pin if p in position and keep[position[p]]]
        buried = {position[p] for p in rule.bury if p in position}
        for slot, i in enumerate(pinned):
            notes[i].append(f"pinned({slot + 1})")
        for i in buried:
            notes[i].append("buried")
        middle = [i for i in rows if i not in set(pinned) and i not in buried]
        rows = np.array(pinned + middle + [i for i in rows if i in buried and i not in set(pinned)], dtype=np.int64)
    return RuleResult(order=rows, notes=[notes[i] for i in rows])


@dataclass(frozen=True)
class RulesStage:
    """Business rules after the model (:mod:`ranking.rules`); records notes per product."""

    config: RulesConfig
    facts: Callable[[Candidates], ProductFacts]
    depth: int = 100
    name: str = "rules"
    skippable: bool = False  # filters and business rules run even when the request's budget is spent

    def __call__(self, query: Query, candidates: Candidates) -> Noted:
        """Rules over the first ``depth`` rows (stock, promotion and price read now); the rest follow
        in their order (offline evaluation still sees a full-depth list), less the rows whose facts
        as last built (:meth:`ranking.facts.CatalogFacts.known`) fail the filters or, with
        ``out_of_stock: hide``, are out of stock. A row's place never depends on how many rows a
        request asks for, so the pages of a search agree at any offset."""
        head = candidates.top(self.depth)
        facts = self.facts(head)
        score = np.nan_to_num(head.score, nan=float(np.nanmin(head.score)) if np.isfinite(head.score).any() else 0.0)
        keep = facts.matching(query.filters) if query.filters.active() else None
        result = apply_rules(query.text, head.product_ids, score, facts.in_stock, facts.promoted, self.config, keep)
        reordered = head.take(result.order)
        notes = {pid: n for pid, n in zip(reordered.product_ids, result.notes) if n}
        if len(candidates) > len(head):
            tail = candidates.take(slice(len(head), None))
            hide = self.config.out_of_stock == "hide"
            if query.filters.active() or hide:
                known = getattr(self.facts, "known", self.facts)(tail)
                keep = known.matching(query.filters) & (known.stocked if hide else True)
                tail = tail.take(np.flatnonzero(keep))
            reordered = reordered.then(tail)
        return Noted(reordered, notes)
