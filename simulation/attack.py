"""A click attack (SIMULATED): bots that click one chosen product for some queries.

``shoprank simulate --attack-product P --attack-query Q [--attack-query Q2 ...]
--attack-bots N --attack-searches M`` runs it beside the honest shoppers: N bot
users (one bot, or a swarm) share M searches of the attacked queries through the
real HTTP API, page through the results (``k`` up to 100) until the product shows,
and click it at the position where it showed (or at position 1 when it never
did: a click with no impression). Nothing else: no carts, no purchases. The
report says how often the product showed and at which ranks, so a run before and
after retraining measures what the clicks did to the ranking.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class ClickAttack:
    """Bots clicking ``product`` for ``queries`` (SIMULATED)."""

    product: str
    queries: list[str]
    bots: int = 1
    searches: int = 300
    depth: int = 100
    ranks: list[int | None] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def search(self, client: httpx.Client, base_url: str, number: int) -> None:
        """The attack's search ``number``: bot ``number % bots`` searches and clicks the product."""
        bot, query = f"bot-{number % self.bots}", self.queries[number % len(self.queries)]
        try:
            found = client.post(f"{base_url}/v1/search", json={"query": query, "k": self.depth, "user_id": bot})
            if found.status_code != 200:
                raise httpx.HTTPError(f"search {found.status_code}")
            body = found.json()
            shown = [item["product_id"] for item in body["items"]]
            rank = shown.index(self.product) + 1 if self.product in shown else None
            # the event id names the search (its request id), so another run's clicks are not taken for retries
            click = {"event_id": f"{body['request_id']}-attack-click", "request_id": body["request_id"],
                     "type": "click", "product_id": self.product, "position": rank or 1, "user_id": bot}
            posted = client.post(f"{base_url}/v1/events", json=[click])
            if posted.status_code != 202:
                raise httpx.HTTPError(f"events {posted.status_code}")
        except httpx.HTTPError as err:
            with self._lock:
                self.errors[str(err) or type(err).__name__] += 1
            return
        with self._lock:
            self.ranks.append(rank)

    def report(self) -> dict[str, object]:
        seen = [r for r in self.ranks if r is not None]
        return {"product": self.product, "queries": self.queries, "bots": self.bots, "searches": len(self.ranks),
                "shown_share": round(len(seen) / max(1, len(self.ranks)), 4),
                "median_rank_when_shown": sorted(seen)[len(seen) // 2] if seen else None,
                "errors": dict(self.errors), "note": "SIMULATED attack"}
