"""What a search asks: the text, who asks, the request's filters and its deadline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Filters:
    """Request filters, applied by the rules stage (:mod:`ranking.rules`)."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None

    def active(self) -> bool:
        return any(v is not None for v in (self.category, self.min_price, self.max_price, self.in_stock))


@dataclass(frozen=True)
class Query:
    """What a stage may know about the request: the text, who asks, by when.

    ``deadline`` is a ``time.monotonic()`` value; stages that can be cancelled
    (the cross-encoders) stop there and raise ``StageTimeout``.
    """

    text: str
    user_id: str | None = None
    filters: Filters = field(default_factory=Filters)
    deadline: float | None = None
