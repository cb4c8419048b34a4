"""Training curves and modality forgetting (KDSR Fig. 1) from each run's dvclive logs
(``models/<ds>/<model>/s<seed>/dvclive``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots as P
from .collect import Run


def training_curves(ds: str, runs: list[Run], models_dir: Path, curves: list[str], plot_dir: Path
                    ) -> tuple[list[tuple[str, str]], dict[str, dict[str, P.Series]], list[str]]:
    """One training-curve PNG per model of ``ds`` (the ``curves`` series, one line per seed) and their TSVs.

    Returns (plot links ``(title, plots/<png>)``, the forgetting series ``model -> label -> mean over seeds``,
    notes). The loss-term sizes (``terms/`` series, KDSR) are read by :func:`term_sizes`."""
    out, notes = [], []
    forgetting: dict[str, dict[str, P.Series]] = {}
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        if r.dataset == ds:
            by_model.setdefault(r.model, []).append(r)
    missing = []
    for m in sorted(by_model):
        logs = {}
        for r in by_model[m]:
            live = models_dir / ds / m / f"s{r.seed}" / "dvclive"
            series = P.read_dvclive(live)
            if series:
                logs[r.seed] = series
        if not logs:
            missing.append(m)
            continue
        names = [s for s in curves if any(s in v for v in logs.values())]
        if not names:  # fall back to the loss and every validation metric at k=10
            names = sorted({s for v in logs.values() for s in v if s == "train/loss" or
                            (s.startswith("valid/") and s.endswith("@10") and s.count("/") == 1)})
        png = P.plot_training(logs, names, f"{ds} / {m}: training curves",
                              plot_dir / f"{P.slug(ds)}_training_{P.slug(m)}.png")
        out.append((f"Training curves: {m}", f"plots/{png.name}"))
        for seed, series in logs.items():
            for s in names:
                if s in series:
                    P.write_tsv(plot_dir / "data" / "training" / P.slug(ds) / P.slug(m) / f"s{seed}" / f"{s}.tsv",
                                ["step", "value"], series[s])
        fseries = sorted({s for v in logs.values() for s in v if s.startswith("forgetting/")})
        for s in fseries:
            steps: dict[int, list[float]] = {}
            for series in logs.values():
                for step, val in series.get(s, []):
                    steps.setdefault(step, []).append(val)
            forgetting.setdefault(m, {})[s[len("forgetting/"):]] = [(st, float(np.mean(v)))
                                                                     for st, v in sorted(steps.items())]
    if missing:
        notes.append(f"no training logs (models/{ds}/<model>/s<seed>/dvclive) for: {', '.join(missing)}")
    return out, forgetting, notes


def forgetting_plot(ds: str, forgetting: dict[str, dict[str, P.Series]], plot_dir: Path) -> tuple[str, str]:
    """Every model's forgetting series of ``ds`` on one PNG, plus one TSV per series; returns the plot link."""
    lines = {f"{m}: {s}": pts for m, d in forgetting.items() for s, pts in d.items()}
    png = P.plot_lines(lines, f"{ds}: modality forgetting (mean over seeds)", "correlation",
                       plot_dir / f"{P.slug(ds)}_forgetting.png")
    for m, d in forgetting.items():
        for s, pts in d.items():
            P.write_tsv(plot_dir / "data" / "forgetting" / P.slug(ds) / P.slug(m) / f"{s}.tsv", ["step", "value"], pts)
    return "Modality forgetting", f"plots/{png.name}"


NEGLIGIBLE = 0.01  # as modalrec.models.kdsr.NEGLIGIBLE (the report does not import the models)


def term_sizes(ds: str, runs: list[Run], models_dir: Path) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """KDSR's loss-term sizes from the dvclive series ``terms/<term>_grad_ratio`` (each weighted CDL term's gradient
    norm on the modality tables over the recommendation loss's, on a fixed batch, per epoch): per model and term the
    mean over seeds at the first and the last logged epoch. Returns (``model -> term -> [first, last]``, one note
    line per model, terms under 1% at either end flagged)."""
    sizes: dict[str, dict[str, list[float]]] = {}
    for m in sorted({r.model for r in runs if r.dataset == ds}):
        first: dict[str, list[float]] = {}
        last: dict[str, list[float]] = {}
        for r in runs:
            if r.dataset != ds or r.model != m:
                continue
            series = P.read_dvclive(models_dir / ds / m / f"s{r.seed}" / "dvclive") or {}
            for s, pts in series.items():
                if s.startswith("terms/") and s.endswith("_grad_ratio") and pts:
                    t = s[len("terms/"):-len("_grad_ratio")]
                    first.setdefault(t, []).append(float(pts[0][1]))
                    last.setdefault(t, []).append(float(pts[-1][1]))
        if first:
            sizes[m] = {t: [float(np.mean(first[t])), float(np.mean(last[t]))] for t in sorted(first)}
    notes = []
    for m, d in sizes.items():
        cells = [f"{t} {a:.2g} → {b:.2g}" + (" ⚠" if min(a, b) < NEGLIGIBLE else "") for t, (a, b) in d.items()]
        notes.append(f"loss-term sizes of `{m}` (each weighted CDL term's gradient norm on the modality tables / the "
                     f"recommendation loss's, first → last epoch, mean over seeds; ⚠ = under {NEGLIGIBLE:.0%}): "
                     + "; ".join(cells))
    return sizes, notes
