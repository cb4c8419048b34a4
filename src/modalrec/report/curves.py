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
        write_series(plot_dir, ds, m, logs, names)
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


def write_series(plot_dir: Path, ds: str, model: str, logs: dict[int, dict[str, P.Series]], names: list[str]) -> None:
    """The data behind a run's curves for ``dvc plots``: ``<plot_dir>/data/training/<ds>/<model>/s<seed>/<series>.tsv``
    (columns step, value) for each seed's logged series among ``names``."""
    for seed, series in logs.items():
        for name in names:
            if name in series:
                P.write_tsv(plot_dir / "data" / "training" / P.slug(ds) / P.slug(model) / f"s{seed}" / f"{name}.tsv",
                            ["step", "value"], series[name])


def forgetting_plot(ds: str, forgetting: dict[str, dict[str, P.Series]], plot_dir: Path) -> tuple[str, str]:
    """One panel per forgetting series of ``ds`` (one line per model), plus one TSV per series; returns the plot link."""
    panels: dict[str, dict[str, P.Series]] = {}
    for m, d in forgetting.items():
        for s, pts in d.items():
            panels.setdefault(s, {})[m] = pts
    png = P.plot_panels(panels, f"{ds}: modality forgetting (mean over seeds)", "correlation",
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


BRANCH_TRAIN = ("train/kd_weight", "train/kd", "train/ce")  # ODMT's loss dict entries, logged by the trainer


def branch_curves(ds: str, runs: list[Run], models_dir: Path, metric: str, plot_dir: Path
                  ) -> tuple[list[tuple[str, str]], list[str], dict[str, dict]]:
    """Per-branch and ensemble validation curves of the multi-branch runs of ``ds`` (ODMT and its late-fusion
    baselines), with the distillation weight and loss: whether the branches learn from each other.

    Reads each run's dvclive series ``valid/<metric>`` (the ensemble), ``valid/<branch>/<metric>`` and
    :data:`BRANCH_TRAIN`; averages them over seeds per epoch. Returns (plot links: one PNG per model, two panels;
    markdown lines: one per-epoch table per model; ``{model: {series: [[epoch, mean], ...]}}`` for summary.json).
    Models without branch series are skipped."""
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        if r.dataset == ds:
            by_model.setdefault(r.model, []).append(r)
    links, lines, data = [], [], {}
    ens = f"valid/{metric}"
    for m in sorted(by_model):
        logs = {r.seed: P.read_dvclive(models_dir / ds / m / f"s{r.seed}" / "dvclive") for r in by_model[m]}
        names = {s for v in logs.values() for s in v}
        branches = sorted({s.split("/")[1] for s in names
                           if s.startswith("valid/") and s.count("/") == 2 and s.endswith(f"/{metric}")})
        if not branches:
            continue
        series = [ens] + [f"valid/{b}/{metric}" for b in branches] + [s for s in BRANCH_TRAIN if s in names]
        mean: dict[str, dict[int, float]] = {}
        for s in series:
            steps: dict[int, list[float]] = {}
            for v in logs.values():
                for step, val in v.get(s, []):
                    steps.setdefault(step + 1, []).append(val)  # dvclive steps 0.. are epochs 1..
            mean[s] = {e: float(np.mean(vals)) for e, vals in sorted(steps.items())}
        data[m] = {s: [[e, v] for e, v in d.items()] for s, d in mean.items()}
        png = P.plot_branches({s: [(e - 1, v) for e, v in mean[s].items()] for s in series}, metric,
                              f"{ds} / {m}: branches and ensemble (mean over {len(logs)} seed(s))",
                              plot_dir / f"{P.slug(ds)}_branches_{P.slug(m)}.png")
        links.append((f"Branches and distillation: {m}", f"plots/{png.name}"))
        write_series(plot_dir, ds, m, logs, series)
        cols = [("ensemble", ens)] + [(b, f"valid/{b}/{metric}") for b in branches] + \
               [(s.split("/", 1)[1], s) for s in BRANCH_TRAIN if s in mean]
        lines += [f"**`{m}`: validation {metric} per epoch, ensemble and branches** (mean over seeds "
                  f"{', '.join(map(str, sorted(logs)))}; `kd_weight`, `kd`, `ce`: the training loss's distillation "
                  f"weight, distillation term and summed branch cross-entropies, epoch means)", "",
                  "| epoch | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        best = max(mean[ens], key=lambda e: (mean[ens][e], -e)) if mean[ens] else None
        for e in sorted(mean[ens]):
            cells = [f"{mean[s][e]:.4f}" if e in mean[s] else "–" for _, s in cols]
            lines.append(f"| {e}{' *' if e == best else ''} | " + " | ".join(cells) + " |")
        lines += ["", "`*`: the epoch with the best mean ensemble value.", ""]
    return links, lines, data
