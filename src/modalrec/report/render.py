"""Markdown rendering of the aggregated tables (reports/summary.md)."""

from __future__ import annotations

import math
from typing import Any

from .aggregate import Table, describe_protocol

SIG_MARK = "†"


def fmt_cell(mean: float, std: float, n: int, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def pretty_metric(name: str) -> str:
    m, _, k = name.partition("@")
    return {"hr": "HR", "mrr": "MRR", "ndcg": "NDCG", "recall": "Recall"}.get(m, m) + f"@{k}"


def render_table(t: Table, alpha: float, method: str, digits: int = 4) -> list[str]:
    """Models as columns (the papers' layout), metrics as rows; best baseline underlined, best model bold,
    ``†`` on a proposed model's value that differs from the row's best baseline with p < ``alpha``, and one
    relative-improvement column per proposed model."""
    head = ["Metric"] + [f"`{m}`" for m in t.models] + [f"Improv. `{m}`" for m in t.proposed]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name in t.metrics:
        row = [pretty_metric(name)]
        for m in t.models:
            c = t.cells[m].get(name)
            if c is None:
                row.append("–")
                continue
            s = fmt_cell(c.mean, c.std, c.n, digits)
            if t.best_baseline.get(name) == m:
                s = f"<u>{s}</u>"
            if t.best_model.get(name) == m:
                s = f"**{s}**"
            sig = t.significance.get(m, {}).get(name)
            if sig is not None and sig.get("p") is not None and not math.isnan(sig["p"]) and sig["p"] < alpha:
                s += SIG_MARK
            row.append(s)
        for m in t.proposed:
            imp = t.improvement.get(m, {}).get(name)
            row.append("–" if imp is None or math.isnan(imp) else f"{100 * imp:+.2f}%")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_branches(t: Table, digits: int = 4) -> list[str]:
    if not t.branches:
        return []
    names = [n for n in t.metrics if any(n in d for d in t.branches.values())]
    lines = ["Per-branch test metrics (each branch's own scores, same protocol):", "",
             "| Branch | " + " | ".join(pretty_metric(n) for n in names) + " |",
             "|:---|" + "|".join(["---:"] * len(names)) + "|"]
    for b in sorted(t.branches):
        cells = [fmt_cell(c.mean, c.std, c.n, digits) if (c := t.branches[b].get(n)) else "–" for n in names]
        lines.append(f"| `{b}` | " + " | ".join(cells) + " |")
    return lines + [""]


def render_protocol(t: Table) -> list[str]:
    lines = [f"**Protocol** (every column): {describe_protocol(t.protocol)}."]
    seeds = "; ".join(f"`{m}` s{','.join(map(str, t.seeds[m]))}" for m in t.models)
    lines.append(f"**Seeds** (mean ± sample std over seeds): {seeds}.")
    for w in t.warnings:
        lines.append(f"> **Warning:** {w}")
    return lines


def render_significance_note(t: Table, alpha: float, method: str) -> list[str]:
    if not t.proposed:
        return []
    label = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}.get(method, method)
    units = sorted({s.get("units") for d in t.significance.values() for s in d.values() if s.get("units")})
    ns = sorted({s.get("n") for d in t.significance.values() for s in d.values() if s.get("units")})
    how = (f"over {'/'.join(units)} (n = {', '.join(map(str, ns))}; per-unit metric averaged over the shared seeds)"
           if units else "(not computed: no shared seeds)")
    return [f"<u>underline</u>: best baseline; **bold**: best model; {SIG_MARK}: p < {alpha} in a two-sided "
            f"{label} against the row's best baseline, {how}. Improv.: relative change over the best baseline."]


def render_summary(tables: list[Table], plots: dict[str, list[tuple[str, str]]], notes: dict[str, list[str]],
                   alpha: float, method: str, header: list[str], digits: int = 4,
                   sections: dict[str, list[str]] | None = None) -> str:
    """The whole summary.md: per dataset, per protocol group a table, then its plots, extra markdown sections
    (``sections[ds]``: the per-epoch branch tables) and notes."""
    out = ["# modalrec results", ""] + header + [""]
    datasets = sorted({t.dataset for t in tables} | set(plots) | set(notes))
    for ds in datasets:
        out += [f"## {ds}", ""]
        dts = [t for t in tables if t.dataset == ds]
        for i, t in enumerate(dts, start=1):
            if len(dts) > 1:
                out += [f"### Table {i} of {len(dts)}", ""]
            out += render_protocol(t) + [""] + render_table(t, alpha, method, digits) + [""]
            out += render_significance_note(t, alpha, method) + [""]
            out += render_branches(t, digits)
        if len(dts) > 1:
            out += ["> Models evaluated under different protocols are in separate tables: compare numbers only "
                    "within a table.", ""]
        if plots.get(ds):
            out += ["### Plots", ""]
            for title, rel in plots[ds]:
                out += [f"**{title}**", "", f"![{title}]({rel})", ""]
        if (sections or {}).get(ds):
            out += ["### Branches per epoch", ""] + sections[ds]
        for n in notes.get(ds, []):
            out.append(f"- {n}")
        if notes.get(ds):
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def dump_json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None so summary.json stays strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: dump_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump_json_safe(v) for v in obj]
    return obj
