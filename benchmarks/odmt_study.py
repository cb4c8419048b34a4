"""ODMT's fixes (issue 19) chosen on validation: a small study on a real multi-modal dataset, run through the real
stages (prepare, encode, train, evaluate, report) in a scratch folder of its own.

    python benchmarks/odmt_study.py --workdir ../odmt-study [--dataset ml100k_odmt|office|synthetic] [--seeds 2023]
                                    [--ablation-seeds S ...] [--epochs 20] [--chosen VARIANT]
                                    [--phase fixes headline transfer ablations report | all] [--jobs N]

The scratch folder gets a copy of params.yaml with the study's dataset entry (``ml100k_odmt``: MovieLens-100K with
TMDB plots and posters under ODMT's data rule, users >= 5, last 15, no item core), ``train.device: cpu`` and one
``models`` entry per variant below; every run uses the family's trainer options (``odmt.train``: epoch cap, patience,
monitor ``valid/hr@10``), so all variants and baselines have the same budget.

Datasets: ``ml100k_odmt`` (above), ``synthetic`` (the embedded default as params.yaml defines it) and ``office``
(Amazon 2014 Office, ODMT's own dataset and data rule, text only:
``odmt.datasets.office`` gives the paper's T, alpha, text ID initialisation and 30 epochs). ``--chosen`` skips the
fixes phase and takes that variant as chosen (on another dataset's validation: ``odmt_ramp_kl_init``, the params.yaml
defaults, was chosen on ml100k_odmt).

Phase ``fixes``: the released ODMT, then the fixes one on top of the other (:data:`VARIANTS`), and the baselines
(SASRec+LF, +EF and the ID-only SASRec on the same trainer). It
prints each run's best validation Recall@10 (= hr@10, the monitor) and its epoch, from the runs' own
``history.json``, and the variant with the best mean validation value over the seeds; never test.
The headline rows (phase ``headline``, on ``--seeds``) are that variant, :data:`DEFAULT_VARIANT` (params.yaml's
defaults, where validation chose another) and SASRec+LF; the other comparisons run on ``--ablation-seeds``.
Phase ``transfer``: that variant's options on GRU4Rec and NextItNet user encoders, each against its own late fusion
(paper Fig. 5). Phase ``ablations``: the chosen variant and Table 3's ablations of it (:data:`ABLATIONS`: without the ID
initialisation, the ID mask, the IMT tower, online distillation, the ID); its seed table compares the chosen variant
(first column) with each ablation. Phase ``diagnostics``: :data:`DIAGNOSTICS` (never candidates). Phase ``report``: the report stage over every run (``reports/summary.md`` in the scratch folder:
test at the validation-selected epoch, branch curves, significance). Each step skips runs already trained.

Threads: set ``OMP_NUM_THREADS`` yourself (1 on a shared machine), or ``--jobs N``: N runs at a time, each with
cpus // N threads (``_study.train_eval_all``). torch's CPU results depend on the thread count, so a document's
rebuild command names the runs' count (``_study.threads_line``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _study import add_jobs_argument, best_valid, cli, evaluated, threads_line, train_eval_all, trained  # noqa: E402

DATASETS = {
    "ml100k_odmt": {"format": "ml100k", "path": str((ROOT.parent / "shared/datasets/ml-100k-multimodal")),
                    "filter": {"min_len": 5}, "split": {"name": "loo_window", "window": 15}},
    # Amazon 2014 Office (ReChorus release), ODMT's own dataset and data rule; text only (the shared copy has no
    # images): odmt.datasets.office sets modalities [text] and the paper's T, alpha, id_init and 30 epochs
    "office": {"format": "rechorus", "path": str((ROOT.parent / "shared/datasets/amazon2014-office")),
               "filter": {"min_len": 5}, "split": {"name": "loo_window", "window": 15}},
    # the embedded default exactly as params.yaml defines it (the data every `dvc repro` ODMT run reads; images and
    # texts; odmt.datasets.synthetic gives T and alpha)
    "synthetic": yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]["synthetic"],
}

BASE = {"arch": "odmt", "d": 64, "user_mask": "user"}  # one window a user under this data rule: user = window
# the released ODMT, then each fix on top of the previous ones (name -> options)
# (the ramp fix: its end within the epoch cap, a lower maximum, and early stopping that waits for its end + patience)
RAMP = {"ramp_fraction": 0.5, "kd_max_weight": 0.2, "wait_for_ramp": True}
VARIANTS = {
    "odmt_released": {"user_mask": "window"},
    "odmt_ramp": RAMP,
    "odmt_ramp_kl": {**RAMP, "kd_form": "kl", "detach_teacher": True},
    "odmt_ramp_init": {**RAMP, "init_text_pool": "sentence", "init_standardise": True},
    "odmt_ramp_kl_init": {**RAMP, "kd_form": "kl", "detach_teacher": True, "init_text_pool": "sentence",
                          "init_standardise": True},
}
# the params.yaml defaults (odmt.* fixes, chosen on ml100k_odmt's validation at a 20-epoch cap): always in the headline
# rows next to the variant this study's validation chooses, so the defaults every dataset uses are measured too
DEFAULT_VARIANT = "odmt_ramp_kl_init"
# diagnostics, never chosen: the released ODMT without distillation (alpha 0 = constant weight 0: per-branch CE only)
DIAGNOSTICS = {"odmt_no_kd": {"user_mask": "window", "alpha": 0.0}}
LF = {"tower": "separate", "id_init": "random", "objective": "late_fusion"}
EF = {"tower": "separate", "id_init": "random", "fusion": "early", "objective": "independent"}
# the ID-only SASRec on the same trainer, data and protocol (one branch: the ID table, in-batch softmax)
ID_ONLY = {"modalities": [], "tower": "separate", "id_init": "random", "objective": "independent"}
BASELINES = {"sasrec_lf": LF, "sasrec_ef": EF, "sasrec_id": ID_ONLY}
FIX_KEYS = ("ramp_fraction", "wait_for_ramp", "kd_max_weight", "kd_form", "detach_teacher", "init_text_pool",
            "init_standardise", "user_mask", "user_encoder")


def study_params(workdir: Path, dataset: str, epochs: int, transfer: dict | None = None) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["base"]["dataset"] = dataset
    p["datasets"][dataset] = DATASETS[dataset]
    p["train"]["device"] = "cpu"
    p["odmt"]["train"]["epochs"] = epochs
    for k in FIX_KEYS:  # every variant states its options itself, on top of the released code's defaults
        p["odmt"][k] = None
    for name, opts in {**VARIANTS, **BASELINES, **DIAGNOSTICS, **(transfer or {})}.items():
        p["models"][name] = {**BASE, **opts}
    names = list(VARIANTS) + list(BASELINES) + list(DIAGNOSTICS) + list(transfer or {})
    p["runs"] = {"baselines": [], "kdsr": [], "odmt": names}
    p["report"]["datasets"] = [dataset]
    p["report"]["sweep"]["exps"] = "__none__"
    out = workdir / "params.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


def ensure_data(workdir: Path, dataset: str) -> None:
    """prepare, then the token caches of the modalities the dataset's runs use (``odmt.datasets.<ds>.modalities``)."""
    if not (workdir / "data" / "prepared" / dataset / "split.parquet").exists():
        cli(workdir, "prepare")
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    mods = ((p["odmt"].get("datasets") or {}).get(dataset) or {}).get("modalities") or ["text", "image"]
    for m in (f"{m}_tokens" for m in mods):
        if not (workdir / "data" / "features" / dataset / f"{m}.arrow").exists():
            cli(workdir, "encode", "--modality", m)


def print_valid(workdir: Path, dataset: str, names: list[str], seeds: list[int], md: list[str]) -> dict[str, float]:
    """Print (and append to ``md`` as a markdown table) each run's best validation value and epoch per seed."""
    print(f"\nvalidation Recall@10 (valid/hr@10, the monitor) at each run's best epoch; dataset {dataset}")
    print(f"{'run':<22} {'mean':>7}  per seed (value @ epoch)")
    md += ["| run | options | valid R@10 (mean) | per seed: value @ best epoch |", "|---|---|---|---|"]
    means = {}
    for n in names:
        vals = [best_valid(workdir, dataset, n, s, "valid/hr@10") for s in seeds]
        means[n] = float(np.mean([v for v, _ in vals]))
        per = ", ".join(f"s{s}: {v:.4f} @ {e}" for s, (v, e) in zip(seeds, vals))
        print(f"{n:<22} {means[n]:7.4f}  " + per)
        opts = {**VARIANTS, **BASELINES, **DIAGNOSTICS}.get(n) or TRANSFER_OPTS.get(n, {})
        md.append(f"| `{n}` | `{json.dumps(opts)}` | {means[n]:.4f} | {per} |")
    md.append("")
    return means


TRANSFER_OPTS: dict[str, dict] = {}
# ODMT's Table 3: the chosen variant without one part each (names as params.yaml's ablation entries)
ABLATIONS = {"odmt_no_init": {"id_init": "random"}, "odmt_no_id_mask": {"id_mask": False},
             "odmt_no_imt": {"tower": "separate", "tower_layers": 2}, "odmt_no_od": {"objective": "late_fusion"},
             "odmt_no_id": {"use_id": False, "id_init": "random"}}


def transfer_runs(options: dict) -> dict:
    out = {}
    for enc in ("gru4rec", "nextitnet"):
        out[f"odmt_{enc}"] = {**options, "user_encoder": enc}
        out[f"{enc}_lf"] = {**LF, "user_encoder": enc}
    TRANSFER_OPTS.update(out)
    return out


def _number(v: str):
    """``5e-4`` -> 0.0005 (YAML 1.1 reads it as a string), ``2`` -> 2, anything else as YAML."""
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return yaml.safe_load(v)


def tuned_runs(specs: list[str]) -> dict:
    """``--tuned BASELINE:KEY=VALUE,...``: the baseline at the values a search chose on validation
    (``benchmarks/search.py``), as ``<baseline>_tuned``; ``lr`` sets its ``train.lr``, any other key a model option."""
    out = {}
    for spec in specs:
        base, _, kvs = spec.partition(":")
        if base not in BASELINES:
            raise SystemExit(f"--tuned {spec!r}: {base!r} is not one of {sorted(BASELINES)}")
        opts = dict(BASELINES[base])
        for kv in filter(None, kvs.split(",")):
            k, eq, v = kv.partition("=")
            if not eq:
                raise SystemExit(f"--tuned {spec!r}: expected KEY=VALUE, got {kv!r}")
            if k == "lr":
                opts["train"] = {"lr": _number(v)}
            else:
                opts[k] = _number(v)
        out[f"{base}_tuned"] = opts
    TRANSFER_OPTS.update(out)
    return out


def ablation_runs(options: dict) -> dict:
    out = {n: {**options, **change} for n, change in ABLATIONS.items()}
    TRANSFER_OPTS.update(out)
    return out


def complete(workdir: Path, dataset: str, names, seeds) -> bool:
    """Every run of ``names`` trained for every seed."""
    return all(trained(workdir, dataset, n, s) for n in names for s in seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--dataset", default="ml100k_odmt", choices=sorted(DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[2023],
                    help="seeds of the headline rows (the chosen variant and SASRec+LF: the paper's claim)")
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=None,
                    help="seeds of every other run: the released ODMT, SASRec+EF, the ID-only SASRec, transfer, "
                         "ablations, diagnostics (default: --seeds); the issue asks 5 for the headline rows, 3 for "
                         "the rest")
    ap.add_argument("--select-seeds", type=int, nargs="+", default=None,
                    help="seeds the fixes are chosen on (default: the first of --seeds)")
    ap.add_argument("--epochs", type=int, default=20,
                    help="the epoch cap (odmt.train.epochs; odmt.datasets.<ds>.train.epochs wins where set)")
    ap.add_argument("--chosen", default=None, choices=sorted(VARIANTS),
                    help="skip the fixes phase and use this variant, chosen on another dataset's validation "
                         "(e.g. odmt_ramp_kl_init, the params.yaml defaults chosen on ml100k_odmt)")
    ap.add_argument("--tuned", nargs="+", default=[], metavar="BASELINE:KEY=VALUE,...",
                    help="a baseline at the values a search chose on validation (benchmarks/search.py), e.g. "
                         "sasrec_lf:lr=5e-4,dropout=0.2: trained as <baseline>_tuned on --seeds in the headline phase "
                         "and compared with the chosen and default variants")
    ap.add_argument("--phase", nargs="+", default=["all"],
                    choices=["fixes", "headline", "transfer", "ablations", "diagnostics", "report", "all"],
                    help="one or more phases (all = fixes headline transfer ablations report)")
    add_jobs_argument(ap)
    ap.add_argument("--results", type=Path, default=None,
                    help="the results document the report phase writes (default: docs/results/odmt.md for "
                         "ml100k_odmt, docs/results/odmt-<dataset>.md otherwise)")
    a = ap.parse_args()
    sel = a.select_seeds or a.seeds[:1]
    a.results = a.results or ROOT / "docs" / "results" / ("odmt.md" if a.dataset == "ml100k_odmt" else f"odmt-{a.dataset}.md")
    rest = a.ablation_seeds or a.seeds
    phases = set(a.phase)
    a.workdir.mkdir(parents=True, exist_ok=True)
    tuned = tuned_runs(a.tuned)
    study_params(a.workdir, a.dataset, a.epochs, tuned)
    ensure_data(a.workdir, a.dataset)
    fixes = list(VARIANTS) + list(BASELINES)
    if a.chosen:
        chosen = a.chosen
        md = [f"Validation only: each run's best `valid/hr@10` over the epoch cap, patience from `odmt.train`; "
              f"dataset `{a.dataset}`. Options are on top of `{json.dumps(BASE)}`.", "",
              f"No selection on this dataset: `{chosen}` is the variant chosen on MovieLens-100K's validation "
              "(docs/results/odmt.md), the params.yaml defaults.", ""]
    else:
        if {"fixes", "all"} & phases:
            train_eval_all(a.workdir, a.dataset, [(n, s) for s in sel for n in fixes], a.jobs)
        md = [f"Validation only: each run's best `valid/hr@10` over at most {a.epochs} epochs, patience from "
              f"`odmt.train`; dataset `{a.dataset}`; fixes chosen on seeds {sel}. Options are on top of "
              f"`{json.dumps(BASE)}`.", "", "Fixes:", ""]
        means = print_valid(a.workdir, a.dataset, fixes, sel, md)
        chosen = max(VARIANTS, key=lambda n: means[n])
        print(f"\nchosen on validation: {chosen} {VARIANTS[chosen]}")
        md += [f"Chosen on validation: `{chosen}`.", ""]
    # the headline rows (the paper's claim: ODMT vs SASRec+LF) on --seeds; the other comparisons on --ablation-seeds
    headline = list(dict.fromkeys([chosen, DEFAULT_VARIANT, "sasrec_lf", *tuned]))
    others = [n for n in ["odmt_released", *BASELINES] if n not in headline]
    if {"headline", "all"} & phases:
        runs = [(n, s) for s in sorted(set(a.seeds) | set(rest))
                for n in (headline if s in a.seeds else []) + (others if s in rest else [])]
        train_eval_all(a.workdir, a.dataset, runs, a.jobs)
    headline_done = complete(a.workdir, a.dataset, headline, a.seeds) and complete(a.workdir, a.dataset, others, rest)
    if headline_done:
        md += [f"Headline runs over seeds {a.seeds}:", ""]
        if rest == a.seeds:
            print_valid(a.workdir, a.dataset, headline + others, a.seeds, md)
        else:
            print_valid(a.workdir, a.dataset, headline, a.seeds, md)
            md += [f"The other comparisons over seeds {rest}:", ""]
            print_valid(a.workdir, a.dataset, others, rest, md)
    transfer, ablations = transfer_runs(VARIANTS[chosen]), ablation_runs(VARIANTS[chosen])
    study_params(a.workdir, a.dataset, a.epochs, {**transfer, **ablations, **tuned})
    if {"transfer", "all"} & phases:
        train_eval_all(a.workdir, a.dataset, [(n, s) for s in rest for n in transfer], a.jobs)
    if complete(a.workdir, a.dataset, transfer, rest):
        md += ["Transferability (the chosen options on other user encoders, each against its own late fusion):", ""]
        print_valid(a.workdir, a.dataset, list(transfer), rest, md)
    if {"ablations", "all"} & phases:
        train_eval_all(a.workdir, a.dataset, [(n, s) for s in rest for n in [chosen, *ablations]], a.jobs)
    if complete(a.workdir, a.dataset, [chosen, *ablations], rest):
        md += ["Table 3 ablations (the chosen variant without one part each):", ""]
        print_valid(a.workdir, a.dataset, [chosen, *ablations], rest, md)
    if "diagnostics" in phases:
        train_eval_all(a.workdir, a.dataset, [(n, s) for s in rest for n in DIAGNOSTICS], a.jobs)
    diag = [n for n in DIAGNOSTICS if complete(a.workdir, a.dataset, [n], rest)]
    if diag:
        md += ["Diagnostics (not candidates):", ""]
        print_valid(a.workdir, a.dataset, diag, rest, md)
    (a.workdir / "validation.md").write_text("\n".join(md))
    if {"report", "all"} & phases:
        done = [n for n, seeds in [(n, a.seeds) for n in headline] +
                [(n, rest) for n in [*others, *transfer, *ablations, *DIAGNOSTICS]]
                if all(evaluated(a.workdir, a.dataset, n, s) for s in seeds)]
        every = sorted(set(a.seeds) | set(rest))
        p = yaml.safe_load((a.workdir / "params.yaml").read_text())
        p["runs"]["odmt"] = done
        p["base"]["seeds"] = every
        (a.workdir / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        cli(a.workdir, "report")
        from modalrec.report.publish import publish, seed_table

        pairs = [(n, b) for n in dict.fromkeys(["odmt_released", chosen, DEFAULT_VARIANT]) for b in BASELINES] + \
            ([(chosen, DEFAULT_VARIANT)] if chosen != DEFAULT_VARIANT else []) + \
            [(n, t) for n in dict.fromkeys([chosen, DEFAULT_VARIANT]) for t in tuned] + \
            [(f"odmt_{e}", f"{e}_lf") for e in ("gru4rec", "nextitnet")] + [(chosen, n) for n in ablations]
        pairs = [(x, y) for x, y in pairs if x in done and y in done]
        cmd = f"python benchmarks/odmt_study.py --workdir {a.workdir} --dataset {a.dataset} --seeds " + \
            " ".join(map(str, a.seeds)) + \
            (" --ablation-seeds " + " ".join(map(str, rest)) if rest != a.seeds else "") + (f" --chosen {a.chosen}" if a.chosen else " --select-seeds " + " ".join(map(str, sel))) + \
            f" --epochs {a.epochs}" + (" --tuned " + " ".join(a.tuned) if a.tuned else "") + \
            (f" --jobs {a.jobs}" if a.jobs > 1 else "")
        ran = [ph for ph, ok in (
            ("headline", headline_done),
            ("transfer", complete(a.workdir, a.dataset, transfer, rest)),
            ("ablations", complete(a.workdir, a.dataset, ablations, rest))) if ok]
        cmd += " --phase " + " ".join(([] if a.chosen else ["fixes"]) + ran + ["report"])
        pre = ["## Over seeds (test at the validation-selected epoch)", "",
               *seed_table(a.workdir / "reports", a.dataset, pairs, every, ("hr@10", "ndcg@10", "hr@20")),
               "## Selection on validation", "", *md, "## Full report", ""]
        out = publish(a.workdir / "reports", a.results, f"ODMT reproduction study ({a.dataset})",
                      [threads_line(a.workdir, a.dataset, [(n, s) for n in done for s in every]), cmd], pre)
        print(f"published -> {out}")


if __name__ == "__main__":
    main()
