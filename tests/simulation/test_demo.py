"""The demo store's judgments: the grades its docstring describes."""

from __future__ import annotations

import re

import simulation.demo as demo


def test_the_docstring_names_every_grade_the_judgments_give() -> None:
    """Before: the docstring listed 8/5/2/0, and judgments also gave 4 (the right type, another noun)."""
    _, judgments = demo.make_queries(demo.make_products(500, 7), 200, 11)
    grades = {j["grade"] for j in judgments}
    assert 4 in grades
    described = {int(g) for g in re.findall(r"\b(\d) (?:exact|right|same|otherwise)", " ".join(demo.__doc__.split()))}
    assert described == grades
