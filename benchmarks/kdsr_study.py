"""KDSR's reproduction study (issue 18): KDSR on SASRec against its backbone with tuned tables and both frozen
baselines, Table 3's ablations, KDSR on MMSR against MMSR, over seeds, on a real multi-modal dataset, through the
real stages (prepare, encode, compress, distill, train, evaluate, report) in a scratch folder of its own.

    python benchmarks/kdsr_study.py --workdir ../kdsr-study [--dataset ml100k] [--seeds 2023 2024 2025]
                                    [--epochs 30] [--groups headline ablations graph] [--phase train|report|all]
                                    [--prefixes K] [--width D] [--jobs N] [--results docs/results/kdsr-<name>.md]

The scratch folder gets a copy of params.yaml with ``base.dataset``, ``train.device: cpu`` and one epoch cap for
every run (``train.epochs`` and the KDSR family's own, so both sides get the same budget; patience is
``train.patience`` = ``kdsr.train.patience``), then trains and evaluates each group's models for every seed (runs
already done are skipped), the headline group first. Phase ``report`` runs the report stage over every model that
has all seeds and writes ``docs/results/kdsr.md`` (``--results``): the paired tests over seeds, each run's best
validation epoch, and the report (test at the validation-selected epoch, significance over users, training curves,
the term sizes, the forgetting curves of Figure 1: KDSR next to the same backbone fine-tuned without CDL).
No hyper-parameter is chosen here: every model runs with its params.yaml entry (λ_C was chosen on ML-100K
validation, docs/kdsr.md).

Datasets: a key of params.yaml's ``datasets`` (``ml100k``, ``synthetic``) or of :data:`DATASETS`: ``office_kdsr``
(Amazon 2014 Office under KDSR's rule, 5-core and ratio split; text only, so every compared model and CDL run on
the text modality alone).

Threads: set ``OMP_NUM_THREADS`` yourself (1 on a shared machine), or ``--jobs N``: N runs at a time, each with
cpus // N threads (``_study.train_eval_all``; on 2 cores two 1-thread runs train ~1.4-1.6x as many runs an hour as
one 2-thread run). torch's CPU results depend on the thread count, so a document's rebuild command names
the runs' count (``_study.threads_line``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _study import add_jobs_argument, best_valid, cli, evaluated, threads_line, train_eval_all  # noqa: E402
from modalrec.report.publish import publish, seed_table  # noqa: E402

GROUPS = {  # name -> (model, runs list, code) in the order they run
    "headline": [("sasrec_tuned", "baselines", "sasrec", "compressed"), ("kdsr_sasrec", "kdsr", "sasrec", None),
                 ("sasrec_frozen", "baselines", "sasrec", "features"),
                 ("sasrec_frozen_m", "baselines", "sasrec", "compressed"),
                 ("kdsr_no_both", "kdsr", "sasrec", None)],
    "ablations": [("kdsr_no_code", "kdsr", "sasrec", None), ("kdsr_no_holistic", "kdsr", "sasrec", None),
                  ("kdsr_no_tau", "kdsr", "sasrec", None)],
    "graph": [("mmsr", "kdsr", "mmsr", None), ("kdsr_mmsr", "kdsr", "mmsr", None),
              ("mmsr_released", "kdsr", "mmsr_released", None)],
    # the papers' other baselines that read modalities (issue 21, docs/baselines.md), next to SASRec with and
    # without features: each on its params.yaml defaults, the same epoch cap and patience
    "baselines": [("sasrec", "baselines", "sasrec", "prepared"), ("sasrec_frozen", "baselines", "sasrec", "features"),
                  ("fdsa", "baselines", "fdsa", "features"), ("unisrec", "baselines", "unisrec", "features"),
                  ("difsr", "baselines", "difsr", "features"), ("nova", "baselines", "nova", "features"),
                  ("trans2d", "baselines", "trans2d", "features"), ("mmsrec", "baselines", "mmsrec", "features")],
}
COMPARE = [("kdsr_sasrec", "sasrec_tuned"), ("kdsr_sasrec", "sasrec_frozen"), ("kdsr_sasrec", "sasrec_frozen_m"),
           ("kdsr_sasrec", "kdsr_no_both"), ("kdsr_no_code", "sasrec_tuned"), ("kdsr_no_holistic", "sasrec_tuned"),
           ("kdsr_no_tau", "sasrec_tuned"), ("kdsr_mmsr", "mmsr"), ("kdsr_mmsr", "mmsr_released"),
           ("mmsr", "mmsr_released")]
# the papers' baselines (the group's models after SASRec with and without features): each vs ID-only SASRec, and
# KDSR vs each (Table 2's claim)
PAPER_BASELINES = [m for m, *_ in GROUPS["baselines"] if m not in ("sasrec", "sasrec_frozen")]
COMPARE += [(b, "sasrec") for b in PAPER_BASELINES] + [("kdsr_sasrec", b) for b in PAPER_BASELINES]
MONITOR = "valid/ndcg@10"
# KDSR's own axes as trained by the study: the preset (λ_S, λ_C) = (1, 0.05) with τ, and Table 3's ablations, each
# one point of them (λ_C = 0, λ_S = 0, no τ)
KDSR_VARIANTS = ["kdsr_sasrec", "kdsr_no_code", "kdsr_no_holistic", "kdsr_no_tau"]
# datasets the study adds to its params copy: name -> (datasets entry, modalities). Amazon 2014 Office (the ReChorus
# release) under KDSR's own rule (5-core, ratio split), text only: the shared copy has no images
DATASETS = {
    "office_kdsr": ({"format": "rechorus", "path": str(ROOT.parent / "shared/datasets/amazon2014-office"),
                     "filter": {"user_core": 5, "item_core": 5}, "split": {"name": "ratio", "test_ratio": 0.2,
                                                                            "valid": 1}}, ["text"]),
}


def study_params(workdir: Path, dataset: str, epochs: int, seeds: list[int], models: list[tuple],
                 prefixes: int | None = None, width: int | None = None) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    if width is not None:  # one embedding width for every compared model, the KDSR backbones and m̃ (compress.dim)
        p["compress"]["dim"] = width
        for bb in p["kdsr"]["backbones"].values():
            bb["dim"] = width
        for m, *_ in models:
            if "dim" in p["models"][m]:
                p["models"][m]["dim"] = width
    if prefixes is not None:  # the graph backbones (alone and under KDSR) train on k prefixes a window
        for bb in ("mmsr", "kdsr_graph"):
            p["kdsr"]["backbones"][bb]["prefixes"] = prefixes
        for m, *_ in models:
            if p["models"][m].get("arch") == "mmsr_released":
                p["models"][m]["prefixes"] = prefixes
    p["base"]["dataset"], p["base"]["seeds"] = dataset, seeds
    if dataset in DATASETS:  # its entry, and every compared model on its modalities only
        p["datasets"][dataset], mods = DATASETS[dataset]
        p["compress"]["modalities"] = mods
        for m, *_ in models:
            entry = p["models"][m]
            if "modalities" in entry or entry.get("arch") in ("kdsr", "mmsr", "mmsr_released", "kdsr_graph"):
                entry["modalities"] = list(mods)
            if entry.get("arch") == "kdsr":  # CDL's weights (the entry's own or its preset's) for those modalities
                w = entry.get("weights") or p["kdsr"]["presets"][entry.get("preset") or p["kdsr"]["preset"]]["weights"]
                entry["weights"] = {k: w[k] for k in mods}  # (the backbone takes KDSR's modalities itself)
    p["train"]["device"], p["train"]["epochs"] = "cpu", epochs
    p["kdsr"].setdefault("train", {})["epochs"] = epochs
    p["runs"]["baselines"] = [{"model": m, "code": c, "data": d} for m, r, c, d in models if r == "baselines"]
    p["runs"]["kdsr"] = [{"model": m, "code": c} for m, r, c, d in models if r == "kdsr"]
    p["runs"]["odmt"] = []
    p["report"]["datasets"] = [dataset]
    p["report"]["sweep"]["exps"] = "__none__"
    (workdir / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return p


def ensure_data(workdir: Path, dataset: str) -> None:
    """prepare, encode and compress the modalities (``compress.modalities``), distill: each skipped when done."""
    if not (workdir / "data" / "prepared" / dataset / "split.parquet").exists():
        cli(workdir, "prepare")
    for m in yaml.safe_load((workdir / "params.yaml").read_text())["compress"]["modalities"]:
        if not (workdir / "data" / "features" / dataset / f"{m}.parquet").exists():
            cli(workdir, "encode", "--modality", m)
        if not (workdir / "data" / "compressed" / dataset / f"{m}.parquet").exists():
            cli(workdir, "compress", "--modality", m)
    if not (workdir / "models" / dataset / "teacher").exists():
        cli(workdir, "distill")


def valid_lines(workdir: Path, dataset: str, names: list[str], seeds: list[int]) -> list[str]:
    md = [f"Best `{MONITOR}` (the monitor) and its epoch, per seed:", "",
          "| run | mean | per seed: value @ epoch |", "|---|---|---|"]
    for n in names:
        vals = [best_valid(workdir, dataset, n, s, MONITOR) for s in seeds]
        per = ", ".join(f"s{s}: {v:.4f} @ {e}" for s, (v, e) in zip(seeds, vals))
        md.append(f"| `{n}` | {np.mean([v for v, _ in vals]):.4f} | {per} |")
        print(md[-1], flush=True)
    return md + [""]


def own_axes(workdir: Path, dataset: str, names: list[str], seeds: list[int], pairs: list[tuple]) -> list[str]:
    """Markdown: KDSR's variant chosen on validation (the best mean ``MONITOR`` of ``KDSR_VARIANTS`` the study has,
    the first on ties) and, where it is not the preset, its test against the preset's baselines over the seeds."""
    cands = [v for v in KDSR_VARIANTS if v in names]
    if len(cands) < 2:
        return []
    means = {v: float(np.mean([best_valid(workdir, dataset, v, s, MONITOR)[0] for s in seeds])) for v in cands}
    chosen = max(cands, key=means.get)
    md = ["## KDSR's own axes chosen on validation", "",
          f"The study's {len(cands)} KDSR variants are {len(cands)} points of KDSR's own hyper-parameters (λ_S, λ_C, "
          "τ); mean best `" + MONITOR + "` over the seeds: " + ", ".join(f"`{v}` {m:.4f}" for v, m in means.items())
          + f". Chosen: `{chosen}`."]
    extra = [(chosen, b) for x, b in pairs if x == "kdsr_sasrec" and b != chosen and (chosen, b) not in pairs]
    if chosen == "kdsr_sasrec" or not extra:
        return md + ["", "Its test comparisons are the rows above.", ""]
    return md + ["Its test against the preset's other baselines (a pair already in the table above is not repeated; "
                 "each baseline had one trial against KDSR's four, so these rows favour KDSR):", "",
                 *seed_table(workdir / "reports", dataset, extra, seeds, ("ndcg@10", "hr@10", "ndcg@20"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--dataset", default="ml100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2023, 2024, 2025])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--groups", nargs="+", default=["headline", "ablations", "graph"], choices=list(GROUPS),
                    help="`baselines`: the papers' other modality baselines (docs/results/baselines-ml100k.md)")
    ap.add_argument("--models", nargs="+", default=None, help="only these models of the groups")
    ap.add_argument("--phase", default="all", choices=["train", "report", "all"])
    ap.add_argument("--prefixes", type=int, default=None,
                    help="the graph backbones train on this many prefixes a window (their `prefixes` option; default "
                         "every prefix): on MovieLens-100K's 50-item windows every prefix costs ~330 s an MMSR epoch")
    ap.add_argument("--width", type=int, default=None,
                    help="one embedding width for every compared model and for m~ (the paper: 128 for all); default "
                         "params.yaml's (SASRec/GRU4Rec 64, m~ and the graph backbones 128). A workdir holds one width")
    add_jobs_argument(ap)
    ap.add_argument("--results", type=Path, default=None,
                    help="the document the report writes (default: docs/results/kdsr.md for ml100k, kdsr-office.md "
                         "for office_kdsr, kdsr-<dataset>.md otherwise)")
    a = ap.parse_args()
    default_results = ROOT / "docs" / "results" / {"ml100k": "kdsr.md", "office_kdsr": "kdsr-office.md"}.get(
        a.dataset, f"kdsr-{a.dataset}.md")
    a.results = (a.results or default_results).resolve()
    a.workdir.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(m for g in a.groups for m in GROUPS[g] if not a.models or m[0] in a.models))
    study_params(a.workdir, a.dataset, a.epochs, a.seeds, models, a.prefixes, a.width)
    ensure_data(a.workdir, a.dataset)
    if a.phase in ("train", "all"):
        for g in a.groups:  # a group's models over all seeds before the next group
            train_eval_all(a.workdir, a.dataset, [(x[0], s) for s in a.seeds for x in GROUPS[g] if x in models],
                           a.jobs)
    if a.phase not in ("report", "all"):
        return
    done = [m for m in models if all(evaluated(a.workdir, a.dataset, m[0], s) for s in a.seeds)]
    study_params(a.workdir, a.dataset, a.epochs, a.seeds, done, a.prefixes, a.width)
    cli(a.workdir, "report")
    names = [m for m, *_ in done]
    pairs = [(x, y) for x, y in COMPARE if x in names and y in names]
    cmd = (f"python benchmarks/kdsr_study.py --workdir {a.workdir} --dataset {a.dataset} --seeds "
           f"{' '.join(map(str, a.seeds))} --epochs {a.epochs} --groups {' '.join(a.groups)}"
           + (f" --models {' '.join(a.models)}" if a.models else "")
           + (f" --prefixes {a.prefixes}" if a.prefixes is not None else "")
           + (f" --width {a.width}" if a.width is not None else "")
           + (f" --jobs {a.jobs}" if a.jobs > 1 else "")
           + (f" --results {os.path.relpath(a.results, ROOT)}" if a.results != default_results else ""))
    pre = ["## Over seeds (test at the validation-selected epoch)", "",
           *seed_table(a.workdir / "reports", a.dataset, pairs, a.seeds, ("ndcg@10", "hr@10", "ndcg@20")),
           *own_axes(a.workdir, a.dataset, names, a.seeds, pairs),
           "## Validation", "", *valid_lines(a.workdir, a.dataset, names, a.seeds), "## Full report", ""]
    title = (f"The papers' modality baselines next to KDSR ({a.dataset})" if "baselines" in a.groups
             else f"KDSR reproduction study ({a.dataset})")
    out = publish(a.workdir / "reports", a.results, title,
                  [threads_line(a.workdir, a.dataset, [(n, s) for n in names for s in a.seeds]), cmd], pre)
    print(f"published -> {out}")


if __name__ == "__main__":
    main()
