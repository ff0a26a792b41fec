"""The SIMULATED store world: reproducible names, and a catalog's own prices kept."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulation.world import WorldConfig, build_world, derive_taxonomy, purchase_propensity


def test_tied_title_words_name_a_category_in_alphabetical_order() -> None:
    """Words as distinctive as each other name their category in alphabetical order, in every process (before:
    in the order of a set of strings, which Python's hash seed changes from one process to the next)."""
    words = [["walnut", "oak", "maple", "cedar", "birch"], ["violet", "tulip", "rose", "lily", "daisy"],
             ["zinc", "tin", "nickel", "iron", "copper"], ["wren", "robin", "owl", "finch", "eagle"]]
    titles = [" ".join(group) for group in words for _ in range(10)]  # every word of a cluster in all its titles
    vectors = np.repeat(np.eye(4, 8, dtype=np.float32), 10, axis=0)  # one direction per cluster
    category, names, _ = derive_taxonomy(titles, vectors, WorldConfig(categories=4, departments=2))
    assert len(set(category[::10])) == 4  # the four clusters found
    assert sorted(names) == ["Birch Cedar", "Copper Iron", "Daisy Lily", "Eagle Finch"]


def test_a_priced_catalog_keeps_its_prices_and_the_rest_of_its_world(demo_products: pd.DataFrame) -> None:
    """A catalog whose products all have a price keeps it (before: made-up prices); the rest of the world is
    the one the same catalog without prices gets."""
    vectors = np.random.default_rng(0).normal(size=(len(demo_products), 16)).astype(np.float32)
    config = WorldConfig(categories=6, departments=2, users=20)
    priced = build_world(demo_products, vectors, config)
    unpriced = build_world(demo_products.drop(columns="price"), vectors, config)
    assert priced.products["price"].tolist() == demo_products["price"].astype(float).tolist()
    assert unpriced.products["price"].tolist() != priced.products["price"].tolist()
    others = ["category_id", "quantity", "promoted", "discount", "hidden_quality"]
    pd.testing.assert_frame_equal(priced.products[others], unpriced.products[others])
    pd.testing.assert_frame_equal(priced.users, unpriced.users)
    some_missing = demo_products.assign(price=demo_products["price"].where(demo_products.index > 0))
    assert build_world(some_missing, vectors, config).products["price"].tolist() == unpriced.products["price"].tolist()


def test_free_products_have_a_finite_propensity() -> None:
    """A catalog's price of 0 (a free product, a category of them) gives no NaN to the simulated shoppers."""
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(20)], "title": [f"thing {i}" for i in range(20)],
                             "category": ["Free"] * 10 + ["Paid"] * 10, "price": [0.0] * 10 + [25.0] * 10})
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    world = build_world(products, vectors, WorldConfig(users=5))
    assert world.products["price"].tolist() == products["price"].tolist()
    users, rows = np.repeat(np.arange(5), 20), np.tile(np.arange(20), 5)
    assert np.isfinite(purchase_propensity(world, users, rows)).all()
