"""The analysts' reports: self-contained HTML files.

``shoprank report ab --experiment NAME --out report.html``: per-arm metrics
with 95% intervals and p-values, the minimum sample size, metric over time
with confidence bands, lift per metric, and the interleaving preference when
the experiment interleaved. Plots are PNGs embedded in the page.

``shoprank report terms --out terms.html`` (:func:`render_terms`): the most searched texts, and
those whose searches show nothing or are never clicked, for merchandisers (synonyms, pins, catalog
gaps).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from online_learning.analysis import ArmReport, InterleavingResult, over_time  # noqa: E402
from online_learning.stats import Comparison  # noqa: E402


def _plain(text: object) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` (an arm named ``t_$5``) would start mathtext, which
    fails to parse or shows other characters."""
    return str(text).replace("$", r"\$")


def _legend_label(arm: object) -> str:
    """``arm`` as a legend entry: matplotlib leaves out of a legend every label that starts with ``_`` (an arm
    named ``_new``), so such a name gets an invisible zero-width space in front."""
    text = _plain(arm)
    return "\u200b" + text if text.startswith("_") else text


def _png(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def plot_over_time(table: pd.DataFrame, column: str, title: str) -> str:
    figure, axis = plt.subplots(figsize=(7, 3.2))
    for arm, part in over_time(table, column).groupby("arm"):
        axis.plot(part["timestamp"], part["mean"], label=_legend_label(arm))
        axis.fill_between(part["timestamp"], part["low"], part["high"], alpha=0.2)
    axis.set_title(f"{title} (cumulative, 95% band)")
    axis.legend()
    figure.autofmt_xdate()
    return _png(figure)


def plot_lifts(report: ArmReport) -> str:
    rows = [c for c in report.comparisons if c.metric != "latency_ms"]
    figure, axis = plt.subplots(figsize=(7, 3.2))
    names = [c.metric for c in rows]
    diffs = [c.treatment - c.control for c in rows]
    errors = [[d - c.ci_low for d, c in zip(diffs, rows)], [c.ci_high - d for d, c in zip(diffs, rows)]]
    axis.errorbar(diffs, names, xerr=errors, fmt="o", capsize=4)
    axis.axvline(0, color="grey", lw=1)
    axis.set_title(f"{_plain(report.treatment)} - {_plain(report.control)}: difference with 95% interval")
    return _png(figure)


def plot_interleaving(result: InterleavingResult) -> str:
    figure, axis = plt.subplots(figsize=(5, 2.6))
    labels = [*map(_plain, result.wins), "tie"]
    axis.bar(labels, [*result.wins.values(), result.ties], color=["#4c72b0", "#dd8452", "#999999"])
    axis.set_ylabel("shoppers")
    axis.set_title(f"Shoppers preferring each arm (preference {result.preference:+.3f}, p={result.p_value:.3g})")
    return _png(figure)


def render(experiment: str, table: pd.DataFrame, report: ArmReport | None,
           interleaved: InterleavingResult | None, out: Path,
           segments: list[tuple[str, ArmReport]] | None = None) -> Path:
    parts = [f"<h1>Experiment {html.escape(experiment)}</h1>",
             f"<p>{len(table)} searches from {table['timestamp'].min()} to {table['timestamp'].max()}.</p>"]
    if report is not None:
        rows = "".join(
            f"<tr><td>{c.metric}</td><td>{c.control:.4f}</td><td>{c.treatment:.4f}</td>"
            f"<td>{f'{c.lift:+.2%}' if c.lift == c.lift else 'n/a'}</td>"
            f"<td>[{c.ci_low:+.4f}, {c.ci_high:+.4f}]</td><td>{c.p_value:.3g}</td><td>{c.sequential_p:.3g}</td>"
            f"<td>{'yes' if c.significant else 'no'}</td></tr>" for c in report.comparisons)
        needed = (f"<b>{report.needed_per_arm}</b> searches" if report.needed_per_arm else
                  "an unknown number of searches (the control's purchase rate is 0 or too high to tell)")
        parts += [
            f"<h2>{html.escape(report.treatment)} vs {html.escape(report.control)}</h2>",
            f"<p>Searches per arm: {html.escape(_counts(report.sizes))}; shoppers per arm: "
            f"{html.escape(_counts(report.shoppers))}. Shoppers are the unit of assignment, so each test counts "
            "a shopper's searches together (a shopper who buys tends to buy again): the intervals are wider than "
            f"for as many independent searches (design effect {report.design_effect:.2f}). To detect a 10% "
            f"relative lift in purchase rate (alpha 0.05, power 0.8) in one test at a planned size, each arm needs "
            f"about {needed}.</p>",
            "<p><i>p</i> is that single test's; <i>always-valid p</i> (mSPRT) stays valid however often the "
            "results are looked at, and is what <code>shoprank promote</code> and <code>guard</code> decide on, "
            "since they read the experiment again every night. <i>significant</i> is <i>p</i> &lt; 0.05.</p>",
            "<table border=1 cellpadding=4><tr><th>metric</th><th>control</th><th>treatment</th><th>lift</th>"
            "<th>95% CI of difference</th><th>p</th><th>always-valid p</th><th>significant</th></tr>"
            f"{rows}</table>",
            plot_lifts(report),
            plot_over_time(table, "bought", "Purchase rate"),
            plot_over_time(table, "clicked", "Click-through rate"),
        ]
    if segments:
        parts += _segments_table(segments)
    if interleaved is not None:
        parts += ["<h2>Team-draft interleaving</h2>",
                  "<p>A search is won by the arm whose products got more of its clicks (a product clicked again "
                  "counts once). A shopper's searches are not independent (searching a query again shows the "
                  "same draft), so each shopper votes once, for the arm that won more of their searches, and the "
                  f"sign test counts shoppers: {interleaved.searches} searches with clicks by "
                  f"{sum(interleaved.wins.values()) + interleaved.ties} shoppers; preferring "
                  f"{html.escape(', '.join(f'{arm}: {n}' for arm, n in interleaved.wins.items()))}, neither: "
                  f"{interleaved.ties}.</p>",
                  plot_interleaving(interleaved)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ShopRank experiment "
            f"{html.escape(experiment)}</title></head><body style='font-family:sans-serif;max-width:900px'>"
            + "\n".join(parts) + "<p><small>Computed by shoprank report ab from the offline event log.</small></p>"
            "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _segments_table(segments: list[tuple[str, ArmReport]]) -> list[str]:
    def cell(c: Comparison) -> str:
        lift = f"{c.lift:+.1%}" if c.lift == c.lift else "n/a"
        return (f"<td>{c.control:.4f} -> {c.treatment:.4f} ({lift})<br>[{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
                f"p {c.p_value:.3g}</td>")

    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{r.sizes.get(r.control, 0)} / {r.sizes.get(r.treatment, 0)}"
                   f"</td>{cell(r.by_metric()['ctr'])}{cell(r.by_metric()['purchase_rate'])}</tr>"
                   for name, r in segments)
    return ["<h2>Segments</h2>", "<p>The same tests within each segment; with several segments, one significant "
            "result among them can be chance.</p>", "<table border=1 cellpadding=4><tr><th>segment</th>"
            f"<th>searches (control / treatment)</th><th>click-through</th><th>purchase rate</th></tr>{rows}</table>"]


TERM_COLUMNS = (("text", "searched text"), ("searches", "searches"), ("shoppers", "shoppers"),
                ("zero_result_rate", "showed nothing"), ("ctr", "clicked"), ("add_to_cart_rate", "added to cart"),
                ("purchase_rate", "bought"), ("filtered_share", "with filters"))


def _terms_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{label}</th>" for _, label in TERM_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[key])) if key == 'text' else row[key]}</td>"
                         if not isinstance(row[key], float) else f"<td>{row[key]:.1%}</td>"
                         for key, _ in TERM_COLUMNS) + "</tr>" for row in rows)
    return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"


SHELF_COLUMNS = (("shelf", "shelf"), ("shown", "shown"), ("shoppers", "shoppers"),
                 ("zero_result_rate", "showed nothing"), ("ctr", "clicked"), ("add_to_cart_rate", "added to cart"),
                 ("purchase_rate", "bought"), ("revenue", "revenue"), ("revenue_per_shelf", "revenue per shelf"))


def render_shelves(report: dict, since: str, out: Path) -> Path:
    """The listings and recommendation shelves report (:func:`online_learning.analysis.shelves_report`)."""
    head = "".join(f"<th>{label}</th>" for _, label in SHELF_COLUMNS)
    money = {"revenue", "revenue_per_shelf"}
    body = "".join("<tr>" + "".join(
        f"<td>{html.escape(str(row[key]))}</td>" if not isinstance(row[key], float)
        else f"<td>{row[key]:,.2f}</td>" if key in money else f"<td>{row[key]:.1%}</td>"
        for key, _ in SHELF_COLUMNS) + "</tr>" for row in report["shelves"])
    parts = ["<h1>Listings and recommendation shelves</h1>",
             f"<p>{report['shown']} shown since {html.escape(since)}, after the traffic filters; a shelf counts "
             "once per request, its click, cart and purchase rates are the shares of shown shelves with one.</p>",
             f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>" if report["shelves"]
             else "<p>None logged.</p>"]
    return _page("ShopRank shelves", parts, "shoprank report shelves", out)


def render_reformulations(rows: list[dict[str, object]], since: str, out: Path) -> Path:
    """What shoppers searched next when a search failed them
    (:func:`online_learning.reformulations.reformulations`) as one HTML page."""
    head = "".join(f"<th>{label}</th>" for label in ("searched first (as typed)", "then found with", "shoppers",
                                                     "share", "how", "synonym rule to review"))
    body = "".join(f"<tr><td>{html.escape(str(r['before']))}</td><td>{html.escape(str(r['after']))}</td>"
                   f"<td>{r['shoppers']}</td><td>{float(r['share']):.1%}</td><td>{html.escape(str(r['relation']))}"
                   f"</td><td><code>{html.escape(str(r['rule'] or ''))}</code></td></tr>" for r in rows)
    parts = ["<h1>Reformulations</h1>",
             f"<p>Since {html.escape(since)}, after the traffic filters: a search that got no click, add to cart or "
             "purchase, followed within the window by the same shopper's search that did. Share: of the shoppers "
             "the first search failed, those who searched the second next. A rule maps what changed; review it "
             "before adding it to the store's synonyms.</p>",
             f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>" if rows else "<p>None found.</p>"]
    return _page("ShopRank reformulations", parts, "shoprank report reformulations", out)


def _page(title: str, parts: list[str], command: str, out: Path) -> Path:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            "<body style='font-family:sans-serif;max-width:1000px'>" + "\n".join(parts)
            + f"<p><small>Computed by {command} from the offline event log.</small></p></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def render_terms(report: dict, since: str, out: Path) -> Path:
    """The search terms report (:func:`online_learning.analysis.terms_report`) as one HTML page."""
    parts = [
        "<h1>Search terms</h1>",
        f"<p>{report['searches']} searches of {report['texts']} texts since {html.escape(since)}, after the "
        f"traffic filters; {report['zero_result_rate']:.1%} showed nothing, {report['ctr']:.1%} got a click.</p>"
        if report["searches"] else "<p>No logged searches.</p>",
        "<h2>Most searched</h2>", _terms_table(report["top"]),
        f"<h2>Mostly showing nothing (searched {report['min_searches']}+ times)</h2>",
        "<p>Candidates for synonyms or for products the catalog lacks; a search shows nothing when its "
        "filters keep no product.</p>", _terms_table(report["no_results"]),
        f"<h2>Never clicked (searched {report['min_searches']}+ times)</h2>",
        "<p>Candidates for pins, synonyms or a look at what these searches show.</p>",
        _terms_table(report["no_clicks"]),
    ]
    return _page("ShopRank search terms", parts, "shoprank report terms", out)
