"""What a listing without a query costs (``/v1/browse``: a storefront's category page).

    python benchmarks/browse.py --dataset ../shared/data/homedepot [--home DIR]

Opens the engine of the home as a server does (every product's store rows read, the facts
built), then lists every category of the catalog's facts under each order (most popular first,
price up, price down), first page of 24 with category, brand and price facets, and the fifth
page, each call uncached. Prints JSON with the CPU, the command, the listings' sizes and the
per-call latency (p50 / p95 / p99 ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles, served_engine  # noqa: E402
from core.query import Filters  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from ranking.facts import ORDERS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings(progress=False, **({"home": args.home} if args.home else {}))
    dataset = load_dataset(args.dataset)
    engine = served_engine(settings, dataset.products)
    table = engine.facts.table()  # type: ignore[union-attr]
    categories = sorted({c for c in table.category if c is not None})
    seconds: dict[str, list[float]] = {}
    sizes = []
    for category in categories:
        for order in ORDERS:
            for name, offset, facets in (("first page, facets", 0, ("category", "brand", "price")),
                                         ("fifth page", 96, ())):
                started = time.perf_counter()
                result = engine.browse(Filters(category=category), 24, offset, order, facets)
                seconds.setdefault(f"{order}, {name}", []).append(time.perf_counter() - started)
            sizes.append(result.total_candidates)
    started = time.perf_counter()
    whole = engine.browse(Filters(), 24, 0, "popular", ("category",))
    print(json.dumps({
        "hardware": hardware(), "command": " ".join(sys.argv), "home": str(settings.home),
        "products": engine.index.count, "categories": len(categories),
        "listing_size": {"min": int(np.min(sizes)), "median": int(np.median(sizes)), "max": int(np.max(sizes))},
        "whole_catalog_ms": round((time.perf_counter() - started) * 1e3, 2), "whole_catalog": whole.total_candidates,
        "ms": {name: percentiles(s) for name, s in seconds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
