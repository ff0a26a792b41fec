"""A seeded, self-made demo store: catalog, queries and graded judgments.

``make run`` serves this catalog on a fresh machine (no data needed), and the
test suite uses small versions of it. Products are built from a small taxonomy
(department > product type, with brands and attributes); queries name one of a
product type's nouns with zero to two attributes (a quarter also a brand), and
judgments grade products by how well they match: 8 exact (type, noun and every
attribute or brand the query names), 5 right type and noun with an attribute or
the brand wrong, 4 right type with another noun, 2 same department, 0 otherwise.
Everything here is synthetic and says so.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm


@dataclass(frozen=True)
class ProductType:
    department: str
    name: str
    nouns: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    base_price: float


COLORS = ("white", "black", "gray", "brown", "red", "blue", "green", "bronze", "chrome", "nickel")
TAXONOMY: tuple[ProductType, ...] = (
    ProductType("Tools", "Drills", ("cordless drill", "hammer drill", "drill driver"),
                {"voltage": ("12-volt", "18-volt", "20-volt"), "kit": ("kit", "tool only")}, 99),
    ProductType("Tools", "Saws", ("circular saw", "miter saw", "jig saw", "table saw"),
                {"voltage": ("18-volt", "20-volt", "corded"), "blade": ("7-1/4 in.", "10 in.", "12 in.")}, 149),
    ProductType("Tools", "Hand Tools", ("hammer", "screwdriver set", "adjustable wrench", "tape measure"),
                {"material": ("steel", "fiberglass", "titanium"), "size": ("16 oz.", "25 ft.", "8 in.")}, 19),
    ProductType("Paint", "Interior Paint", ("interior paint", "wall paint", "ceiling paint"),
                {"color": COLORS, "finish": ("flat", "eggshell", "satin", "semi-gloss"), "size": ("1 qt.", "1 gal.", "5 gal.")}, 35),
    ProductType("Paint", "Exterior Stain", ("deck stain", "fence stain", "wood stain"),
                {"color": ("cedar", "redwood", "walnut", "gray", "clear"), "size": ("1 gal.", "5 gal.")}, 42),
    ProductType("Paint", "Brushes", ("paint brush", "paint roller", "roller cover"),
                {"size": ("2 in.", "3 in.", "9 in."), "material": ("nylon", "polyester", "foam")}, 9),
    ProductType("Lighting", "Ceiling Fans", ("ceiling fan", "outdoor ceiling fan"),
                {"size": ("44 in.", "52 in.", "60 in."), "color": COLORS, "light": ("with light kit", "without light")}, 129),
    ProductType("Lighting", "Light Bulbs", ("led light bulb", "flood light bulb", "vintage edison bulb"),
                {"watt": ("40-watt", "60-watt", "100-watt"), "tone": ("soft white", "daylight", "bright white")}, 12),
    ProductType("Lighting", "Outdoor Lighting", ("wall lantern", "solar path light", "flood light"),
                {"color": COLORS, "power": ("solar", "hardwired", "motion sensor")}, 59),
    ProductType("Plumbing", "Faucets", ("kitchen faucet", "bathroom faucet", "shower faucet"),
                {"color": ("chrome", "brushed nickel", "matte black", "bronze"), "handle": ("single-handle", "2-handle")}, 119),
    ProductType("Plumbing", "Toilets", ("toilet", "toilet seat", "bidet seat"),
                {"color": ("white", "biscuit", "bone"), "shape": ("round", "elongated")}, 189),
    ProductType("Plumbing", "Water Heaters", ("tank water heater", "tankless water heater"),
                {"fuel": ("gas", "electric"), "size": ("40 gal.", "50 gal.")}, 599),
    ProductType("Garden", "Hoses", ("garden hose", "soaker hose", "hose reel"),
                {"size": ("25 ft.", "50 ft.", "100 ft."), "material": ("rubber", "vinyl", "expandable")}, 29),
    ProductType("Garden", "Mowers", ("lawn mower", "riding mower", "reel mower"),
                {"power": ("gas", "battery", "electric"), "width": ("21 in.", "42 in.")}, 349),
    ProductType("Garden", "Planters", ("planter", "raised garden bed", "hanging basket"),
                {"material": ("plastic", "cedar", "ceramic", "metal"), "color": COLORS}, 39),
    ProductType("Flooring", "Tile", ("porcelain tile", "ceramic tile", "mosaic tile"),
                {"size": ("12 in. x 12 in.", "12 in. x 24 in.", "3 in. x 6 in."), "color": COLORS}, 3),
    ProductType("Flooring", "Vinyl Plank", ("vinyl plank flooring", "laminate flooring"),
                {"color": ("oak", "hickory", "gray", "walnut"), "thickness": ("6 mm", "8 mm", "12 mm")}, 2.5),
    ProductType("Storage", "Shelving", ("wire shelving", "garage shelving", "wall shelf"),
                {"material": ("steel", "wood", "plastic"), "tiers": ("3-tier", "4-tier", "5-tier")}, 79),
    ProductType("Storage", "Tool Storage", ("tool chest", "tool box", "rolling tool cabinet"),
                {"color": ("red", "black", "blue"), "drawers": ("5-drawer", "8-drawer", "12-drawer")}, 199),
    ProductType("Appliances", "Refrigerators", ("refrigerator", "french door refrigerator", "mini fridge"),
                {"color": ("stainless steel", "white", "black"), "size": ("18 cu. ft.", "25 cu. ft.", "3.1 cu. ft.")}, 999),
)
BRANDS = {
    "Tools": ("DeWalt", "Milwaukee", "Ryobi", "Makita", "Husky"),
    "Paint": ("Behr", "Glidden", "Rust-Oleum", "Wooster", "Valspar"),
    "Lighting": ("Hampton Bay", "Philips", "Feit", "Home Decorators", "Globe"),
    "Plumbing": ("Delta", "Moen", "Kohler", "American Standard", "Rheem"),
    "Garden": ("Flexzilla", "Toro", "Greenworks", "Vigoro", "Suncast"),
    "Flooring": ("MSI", "TrafficMaster", "Daltile", "LifeProof", "Pergo"),
    "Storage": ("HDX", "Husky", "Everbilt", "Rubbermaid", "Gladiator"),
    "Appliances": ("Samsung", "LG", "Whirlpool", "GE", "Frigidaire"),
}
USES = ("for home and garage", "built to last", "easy to install", "backed by a limited warranty",
        "for indoor use", "for outdoor use", "professional grade", "great value")


@dataclass(frozen=True)
class DemoProduct:
    product_id: str
    type_index: int
    noun: str
    brand: str
    attributes: dict[str, str]
    title: str
    description: str
    price: float
    quantity: int


def make_products(n: int, seed: int = 7) -> list[DemoProduct]:
    """``n`` synthetic products, the same for the same seed."""
    rng = random.Random(seed)
    products = []
    for i in range(n):
        t = rng.randrange(len(TAXONOMY))
        kind = TAXONOMY[t]
        noun = rng.choice(kind.nouns)
        brand = rng.choice(BRANDS[kind.department])
        attributes = {name: rng.choice(values) for name, values in kind.attributes.items()}
        words = [brand, *attributes.values(), noun]
        title = " ".join(words[:1] + words[1:-1][:2] + [noun.title()] + words[1:-1][2:])
        description = f"{noun.capitalize()} by {brand}, {', '.join(attributes.values())}, {rng.choice(USES)}."
        price = round(kind.base_price * rng.uniform(0.6, 1.8), 2)
        quantity = 0 if rng.random() < 0.1 else rng.randint(1, 200)
        products.append(DemoProduct(f"P{100000 + i}", t, noun, brand, attributes, title, description, price, quantity))
    return products


def _grade(product: DemoProduct, type_index: int, noun: str, wanted: dict[str, str], brand: str | None) -> int:
    if product.type_index == type_index and product.noun == noun:
        mismatch = any(product.attributes.get(k) != v for k, v in wanted.items()) or (brand and product.brand != brand)
        return 5 if mismatch else 8
    if product.type_index == type_index:
        return 4
    return 2 if TAXONOMY[product.type_index].department == TAXONOMY[type_index].department else 0


def make_queries(products: list[DemoProduct], n: int, seed: int = 11,
                 judged_per_query: int = 8) -> tuple[list[dict], list[dict]]:
    """``n`` queries with graded judgments over ``products``; 80/20 train/dev split."""
    rng = random.Random(seed)
    by_type: dict[tuple[int, str], list[DemoProduct]] = {}
    for p in products:
        by_type.setdefault((p.type_index, p.noun), []).append(p)
    keys = sorted(by_type)
    queries, judgments = [], []
    for q in range(n):
        type_index, noun = rng.choice(keys)
        anchor = rng.choice(by_type[(type_index, noun)])
        names = rng.sample(sorted(anchor.attributes), k=min(len(anchor.attributes), rng.randint(0, 2)))
        wanted = {name: anchor.attributes[name] for name in names}
        brand = anchor.brand if rng.random() < 0.25 else None
        text = " ".join(([brand.lower()] if brand else []) + [wanted[k] for k in names] + [noun])
        qid = f"dq{q:05d}"
        queries.append({"query_id": qid, "query": text, "split": "dev" if rng.random() < 0.2 else "train"})
        same = by_type[(type_index, noun)]
        pool = rng.sample(same, k=min(len(same), judged_per_query // 2))
        pool += rng.sample(products, k=judged_per_query - len(pool))
        for product in {p.product_id: p for p in pool}.values():
            judgments.append({"query_id": qid, "product_id": product.product_id,
                              "grade": _grade(product, type_index, noun, wanted, brand)})
    return queries, judgments


def write_demo(out: Path, n_products: int = 2000, n_queries: int = 300, seed: int = 7,
               progress: bool = False) -> Path:
    """Write ``products.csv``, ``queries.csv`` and ``judgments.csv`` into ``out``.

    The folder is an evaluation dataset (``shoprank evaluate --dataset``) and
    ``products.csv`` a catalog (``shoprank index --catalog``).
    """
    out.mkdir(parents=True, exist_ok=True)
    products = make_products(n_products, seed)
    queries, judgments = make_queries(products, n_queries, seed + 4)
    with (out / "products.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title", "description", "category", "brand", "price", "quantity", "in_stock"])
        for p in tqdm(products, disable=not progress, desc="demo products"):
            kind = TAXONOMY[p.type_index]
            writer.writerow([p.product_id, p.title, p.description, f"{kind.department} > {kind.name}",
                             p.brand, f"{p.price:.2f}", p.quantity, "true" if p.quantity else "false"])
    for name, rows in (("queries.csv", queries), ("judgments.csv", judgments)):
        with (out / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (out / "README.md").write_text(
        "# ShopRank demo store (synthetic)\n\nGenerated by `shoprank demo` "
        f"(seed {seed}): {n_products} products, {n_queries} queries with graded judgments "
        "(8 exact, 5 attribute wrong, 4 related product, 2 same department, 0 unrelated). "
        "Not real data.\n"
    )
    return out
