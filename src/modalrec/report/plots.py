"""The report's figures, rendered to PNG offline with matplotlib's Agg canvas (no display, no CDN).

- training curves: train loss and validation metrics per epoch, one line per seed (from each run's dvclive logs);
- modality forgetting (KDSR Fig. 1): every dvclive series under ``forgetting/`` per epoch, mean over seeds;
- performance by item-popularity group (ODMT Fig. 4): group 0 = target items never seen in training, groups
  1..G = the seen items split by training count into G groups of equal item count;
- a parameter sweep: a metric against a parameter over ``dvc exp show --json`` experiments.

Every function takes plain data and an output path, so the stage decides where things come from.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..io import atomic_path

Series = list[tuple[int, float]]  # (step/epoch, value)


# ----------------------------------------------------------------------------------------------------------- data
def read_dvclive(live_dir: str | Path) -> dict[str, Series]:
    """Every metric series of a dvclive directory: ``{"train/loss": [(step, value), ...], ...}``.

    Reads ``<dir>/plots/metrics/**/*.tsv`` (dvclive's format: header ``step\\t<name>``); when those are absent
    falls back to the trainer's ``history.json`` next to the dvclive directory (epochs 1.. become steps 0..).
    """
    live_dir = Path(live_dir)
    out: dict[str, Series] = {}
    base = live_dir / "plots" / "metrics"
    for tsv in sorted(base.rglob("*.tsv")) if base.is_dir() else []:
        name = tsv.relative_to(base).with_suffix("").as_posix()
        lines = tsv.read_text().splitlines()
        rows: Series = []
        for i, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            try:
                rows.append((int(float(parts[0])), float(parts[-1])))
            except (ValueError, IndexError):
                raise DataError(f"expected 'step<TAB>value', got {line!r}", path=tsv, line=i) from None
        out[name] = rows
    if out:
        return out
    hist = live_dir.parent / "history.json"
    if hist.exists():
        try:
            rows_h = json.loads(hist.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e.msg}", path=hist, line=e.lineno) from None
        for i, row in enumerate(rows_h):
            step = int(row.get("epoch", i + 1)) - 1
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    out.setdefault(k, []).append((step, float(v)))
    return out


def popularity_groups(train_counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Group of every item id (array indexed by item, row 0 = padding -> -1).

    0 = never seen in training; the seen items, sorted by training count (ties by id, deterministic), are cut into
    ``n_groups`` groups of (nearly) equal item count: 1 = the rarest, ``n_groups`` = the most popular.
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    groups = np.zeros(len(counts), dtype=np.int64)
    groups[0] = -1
    seen = np.flatnonzero(counts > 0)
    seen = seen[seen > 0]
    if len(seen):
        order = seen[np.lexsort((seen, counts[seen]))]
        for g, chunk in enumerate(np.array_split(order, min(n_groups, len(order))), start=1):
            groups[chunk] = g
    return groups


def group_metric(targets: np.ndarray, ranks: np.ndarray, groups: np.ndarray, k: int, name: str,
                 n_groups: int) -> tuple[list[float], list[int]]:
    """Mean per-instance ``name@k`` over the test instances whose target is in each group 0..n_groups
    (NaN for an empty group) and the number of instances per group."""
    from ..evaluate.metrics import metric_arrays

    vals = metric_arrays(np.asarray(ranks), k)[f"{name}@{k}"]
    g = groups[np.asarray(targets, dtype=np.int64)]
    means, counts = [], []
    for i in range(n_groups + 1):
        sel = g == i
        counts.append(int(sel.sum()))
        means.append(float(vals[sel].mean()) if sel.any() else math.nan)
    return means, counts


def exp_rows(exps: Any) -> list[tuple[str, dict[str, Any]]]:
    """``[(experiment name, its data section), ...]`` of ``dvc exp show --json`` output: the workspace and commits,
    then their experiments, in the order DVC prints them (queued and failed experiments have no metrics)."""
    rows: list[tuple[str, dict[str, Any]]] = []

    def visit(entry: dict[str, Any]) -> None:
        data = entry.get("data") or {}
        if data:
            rows.append((str(entry.get("name") or entry.get("rev") or "?"), data))
        for grp in entry.get("experiments") or []:
            for rev in grp.get("revs") or []:
                visit(rev)

    if not isinstance(exps, list):
        raise DataError("expected the JSON list that `dvc exp show --json` prints")
    for e in exps:
        visit(e)
    return rows


def sweep_points(exps: Any, param: str, metric_keys: Mapping[str, str]) -> dict[str, list[tuple[float, float, str]]]:
    """``{label: [(param value, metric value, experiment name), ...]}`` from ``dvc exp show --json`` output.

    ``param`` is a dotted params.yaml key (``kdsr.D``); ``metric_keys`` maps a label to a flat metrics key
    (``synthetic/kdsr_sasrec/test/ndcg@10``) or a dotted path into nested metrics. One point per distinct param
    value (the newest experiment wins; the workspace row is skipped when it duplicates a committed one).
    """
    out: dict[str, dict[float, tuple[float, float, str]]] = {}
    for name, data in exp_rows(exps):
        pv = exp_value(data.get("params") or {}, param)
        if not isinstance(pv, (int, float)) or isinstance(pv, bool):
            continue
        for label, key in metric_keys.items():
            mv = exp_value(data.get("metrics") or {}, key)
            if isinstance(mv, (int, float)) and not isinstance(mv, bool):
                out.setdefault(label, {}).setdefault(float(pv), (float(pv), float(mv), name))
    return {lab: sorted(d.values()) for lab, d in out.items()}


def exp_value(files: Mapping[str, Any], key: str) -> Any:
    """Find ``key`` (flat key first, then a dotted/slashed path) in any file of a dvc exp show data section
    (its ``params`` or ``metrics``); None when absent."""
    for f in sorted(files):
        data = (files[f] or {}).get("data") or {}
        if key in data:
            return data[key]
        node: Any = data
        for part in key.replace("/", ".").split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


# ------------------------------------------------------------------------------------------------------- drawing
def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_training(runs: Mapping[int, Mapping[str, Series]], series: Sequence[str], title: str,
                  path: str | Path) -> Path:
    """One panel per series name (e.g. ``train/loss``, ``valid/ndcg@10``), one line per seed."""
    series = [s for s in series if any(s in r for r in runs.values())] or ["(no data)"]
    fig, axes = _figure(len(series), width=4.2)
    for ax, name in zip(axes, series):
        for seed in sorted(runs):
            pts = runs[seed].get(name)
            if pts:
                x, y = zip(*pts)
                ax.plot(np.asarray(x) + 1, y, marker="o", ms=3, lw=1.2, label=f"seed {seed}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        _integer_x(ax)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_branches(series: Mapping[str, Series], metric: str, title: str, path: str | Path) -> Path:
    """Left: ``valid/<metric>`` (the ensemble, bold) and every ``valid/<branch>/<metric>``; right: the training
    series ``train/kd_weight`` (left axis) and ``train/kd`` / ``train/ce`` (right axis), where present."""
    fig, (left, right) = _figure(2, width=4.8)
    for name, pts in series.items():
        if name.startswith("valid/") and pts:
            x, y = zip(*pts)
            label = "ensemble" if name.count("/") == 1 else name.split("/")[1]
            left.plot(np.asarray(x) + 1, y, marker="o", ms=3, lw=2.4 if label == "ensemble" else 1.2, label=label)
    left.set_title(f"valid/{metric}", fontsize=10)
    twin = right.twinx()
    for name, pts in series.items():
        if name.startswith("train/") and pts:
            ax = right if name == "train/kd_weight" else twin
            x, y = zip(*pts)
            ax.plot(np.asarray(x) + 1, y, marker="o", ms=3, lw=1.2, label=name.split("/", 1)[1],
                    ls="-" if ax is right else "--", color=None)
    right.set_title("distillation weight (left) and losses (right)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        _integer_x(ax)
        ax.grid(alpha=0.3)
    handles = [h for ax in (right, twin) for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in (right, twin) for lab in ax.get_legend_handles_labels()[1]]
    if handles:
        right.legend(handles, labels, fontsize=7)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_panels(panels: Mapping[str, Mapping[str, Series]], title: str, ylabel: str, path: str | Path) -> Path:
    """One panel per series (the forgetting plot: ``image_E_M``, ``text_E_M``, ...), one line per model in each, the
    same colour for a model in every panel and one legend for all (so a model and its comparator, e.g. KDSR and
    the backbone fine-tuned without CDL, are read side by side)."""
    from matplotlib.figure import Figure

    names = sorted(panels)
    ncols = min(3, max(len(names), 1))
    nrows = -(-max(len(names), 1) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    labels = sorted({lab for d in panels.values() for lab in d})
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    for ax, name in zip(axes, names):
        for lab in labels:
            pts = panels[name].get(lab)
            if pts:
                x, y = zip(*pts)
                ax.plot(np.asarray(x) + 1, y, marker="o", ms=2.5, lw=1.2, color=colours[lab], label=lab)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        _integer_x(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if labels:
        handles = [axes[0].plot([], [], color=colours[lab], marker="o", ms=3, label=lab)[0] for lab in labels]
        fig.legend(handles=handles, labels=labels, loc="outside lower center", ncols=min(len(labels), 4),
                   fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_groups(values: Mapping[str, Sequence[float]], counts: Sequence[int], ylabel: str, title: str,
                path: str | Path) -> Path:
    """Grouped bars: x = popularity group (0 = unseen in training), one bar per model; instance counts on top."""
    models = list(values)
    n = len(counts)
    fig, (ax,) = _figure(1, width=max(5.0, 0.9 * n + 2), height=3.8)
    width = 0.8 / max(len(models), 1)
    x = np.arange(n)
    for i, m in enumerate(models):
        y = np.nan_to_num(np.asarray(values[m], dtype=np.float64), nan=0.0)
        ax.bar(x - 0.4 + width * (i + 0.5), y, width, label=m)
    ax.set_xticks(x, [f"{g}\n(n={c})" for g, c in enumerate(counts)], fontsize=8)
    ax.set_xlabel("item-popularity group (0 = unseen in training; 1 = rarest)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    if models:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep(points: Mapping[str, Sequence[tuple[float, float, str]]], param: str, metric: str, title: str,
               path: str | Path) -> Path:
    """Metric against parameter value, one line per model."""
    fig, (ax,) = _figure(1, width=5.5, height=3.8)
    for label in sorted(points):
        pts = sorted(points[label])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.2, label=label)
    xs = sorted({p[0] for pts in points.values() for p in pts})
    if xs and all(x > 0 for x in xs) and xs[-1] / xs[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7)
    return _save(fig, path)


def slug(name: str) -> str:
    """A file-name-safe form of a dataset, model or parameter name (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name)


def write_tsv(path: str | Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Path:
    """A small TSV for ``dvc plots`` (atomic)."""
    path = Path(path)
    text = "\t".join(header) + "\n" + "".join("\t".join(_fmt(v) for v in r) + "\n" for r in rows)
    with atomic_path(path, suffix=".tsv.tmp") as tmp:
        tmp.write_text(text)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)
