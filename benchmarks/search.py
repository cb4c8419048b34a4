"""A hyper-parameter search on validation with one budget for a proposed method and its baselines, as DVC
experiments anyone can rerun (issues 18 and 19): every grid point is one ``dvc exp run --queue`` of the real
pipeline restricted to the comparison's runs, and the selection reads each model's validation metric (the mean over
the seeds, from ``reports/metrics.json``) from ``dvc exp show --json``; test is printed only for the chosen point.

    python benchmarks/search.py kdsr --queue [--dataset ml100k] [--seeds 2023 2024 2025] [--set train.epochs=30]
    dvc queue start -j 1            # then `dvc queue status` until every experiment has run
    python benchmarks/search.py kdsr --select [--out docs/results/kdsr-search.md]

The shared axes (learning rate, dropout) take the same values for every model of the comparison, so each side gets
the same number of trials; ``--own`` adds each method's own axes (KDSR's λ_C; ODMT's T and its ramp length α as a
fraction of the epoch cap), trials its baselines, which
have no such parameter, do not get (the summary says so). DVC's run cache trains a baseline once per shared point.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KDSR_RUNS = {"runs.baselines": "[{model: sasrec_tuned, code: sasrec, data: compressed}]",
             "runs.kdsr": "[{model: kdsr_sasrec, code: sasrec}]", "runs.odmt": "[]"}
ODMT_RUNS = {"runs.baselines": "[]", "runs.kdsr": "[]", "runs.odmt": "[odmt, sasrec_lf, sasrec_ef]"}
# name -> (runs overrides, models compared, monitor, shared axes, own axes); an axis: label -> (values, keys it sets)
SEARCHES = {
    "kdsr": (KDSR_RUNS, ["kdsr_sasrec", "sasrec_tuned"], "valid/ndcg@10",
             {"lr": ([1e-3, 2e-3], ["train.lr"]),
              "dropout": ([0.2, 0.5], ["models.sasrec_tuned.dropout", "kdsr.backbones.sasrec.dropout"])},
             {"lc": ([0.05, 0.5], ["kdsr.presets.kdsr.weights.image", "kdsr.presets.kdsr.weights.text"])}),
    "odmt": (ODMT_RUNS, ["odmt", "sasrec_lf", "sasrec_ef"], "valid/hr@10",
             {"lr": ([5e-4, 1e-3], ["odmt.train.lr"]),
              "dropout": ([0.1, 0.2], ["models.odmt.dropout", "models.sasrec_lf.dropout", "models.sasrec_ef.dropout"])},
             {"T": ([0.3, 0.5], ["odmt.T"]), "ramp": ([0.25, 0.5], ["odmt.ramp_fraction"])}),
}


def _value(label: str, v: float) -> str:
    return f"[1.0,{v}]" if label == "lc" else str(v)  # λ_C: [λ_S, λ_C] with the preset's λ_S = 1


def grid(search: str, own: bool, at: dict[str, float] | None = None) -> list[tuple[str, dict[str, str]]]:
    """``[(experiment name, {params key: value}), ...]``: every point of the shared (and, with ``own``, own) axes;
    ``at`` holds axes at one value (e.g. the method's own axes at its chosen shared point)."""
    _, _, _, shared, mine = SEARCHES[search]
    axes = {**shared, **(mine if own else {})}
    for lab, v in (at or {}).items():
        if lab not in axes:
            raise SystemExit(f"--at {lab}={v}: no axis {lab!r}; axes: {sorted(axes)}")
        axes[lab] = ([v], axes[lab][1])
    out = []
    for combo in itertools.product(*(vals for vals, _ in axes.values())):
        name = search + "-" + "-".join(f"{lab}{v:g}" for lab, v in zip(axes, combo))
        sets = {k: _value(lab, v) for (lab, (_, keys)), v in zip(axes.items(), combo) for k in keys}
        out.append((name, sets))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("search", choices=sorted(SEARCHES))
    act = ap.add_mutually_exclusive_group(required=True)
    act.add_argument("--queue", action="store_true", help="queue one DVC experiment per grid point")
    act.add_argument("--print", action="store_true", help="print the `dvc exp run --queue` commands only")
    act.add_argument("--select", action="store_true", help="choose each model's point on validation")
    ap.add_argument("--dataset", default=None, help="base.dataset of every experiment (default: params.yaml's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="base.seeds of every experiment")
    ap.add_argument("--own", action="store_true", help="add each method's own axes (see the module docstring)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a further override, every point")
    ap.add_argument("--at", action="append", default=[], metavar="AXIS=VALUE",
                    help="hold an axis at one value (e.g. --own --at lr=0.001 --at dropout=0.1 --set "
                         "'runs.odmt=[odmt]': the method's own axes at its chosen shared point only)")
    ap.add_argument("--queued", action="append", default=[], metavar="ARGS",
                    help="--select: the arguments of each --queue command the experiments came from, for the "
                         "document's rebuild block (default: this command's)")
    ap.add_argument("--exps", type=Path, default=None, help="--select: a saved `dvc exp show --json` (default: run it)")
    ap.add_argument("--out", type=Path, default=None, help="--select: also write the table as markdown here")
    a = ap.parse_args()
    runs, models, monitor, shared, mine = SEARCHES[a.search]

    def pairs(items: list[str], flag: str, what: str) -> dict[str, str]:
        """``KEY=VALUE`` arguments of a repeatable option as a dict (a malformed one is a usage error)."""
        out = {}
        for kv in items:
            k, sep, v = kv.partition("=")
            if not sep:
                ap.error(f"{flag} {kv!r}: expected {what}=VALUE")
            out[k] = v
        return out

    at = {lab: float(v) for lab, v in pairs(a.at, "--at", "AXIS").items()}
    if a.select:
        select(a, models, monitor, [k for _, keys in {**shared, **mine}.values() for k in keys])
        return
    common = dict(runs)
    if a.dataset:
        common["base.dataset"] = a.dataset
    if a.seeds:
        common["base.seeds"] = "[" + ",".join(map(str, a.seeds)) + "]"
    common.update(pairs(a.set, "--set", "KEY"))
    # a queued experiment runs in a copy of the workspace under .dvc/tmp/exps/, where a dataset path relative to the
    # repository (../shared/...) points nowhere: it gets the absolute path it has here
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    ds = a.dataset or params["base"]["dataset"]
    path = ((params.get("datasets") or {}).get(ds) or {}).get("path")
    if path and not Path(path).is_absolute() and f"datasets.{ds}.path" not in common:
        common[f"datasets.{ds}.path"] = str((ROOT / path).resolve())
    for name, sets in grid(a.search, a.own, at):
        cmd = ["dvc", "exp", "run", "--queue", "-n", name]
        for k, v in {**common, **sets}.items():
            cmd += ["-S", f"{k if k.startswith('+') else '++' + k}={v}"]  # ++: set, or add a key params.yaml lacks
        print(shlex.join(cmd), flush=True)
        if a.queue:
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if a.queue:
        print(f"queued {len(grid(a.search, a.own, at))} experiments; run them with `dvc queue start -j 1`, then "
              f"`python benchmarks/search.py {a.search} --select`")


def finished(exps: list) -> list:
    """``dvc exp show --json`` without the experiments still running (DVC shows a running workspace experiment with
    the workspace's rev and the metrics of the commit it started from)."""
    def keep(entry: dict) -> dict:
        groups = [{**g, "revs": [keep(r) for r in g.get("revs") or [] if r.get("rev") != "workspace"]}
                  for g in entry.get("experiments") or []]
        return {**entry, "experiments": groups}
    return [keep(e) for e in exps]


def select(a: argparse.Namespace, models: list[str], monitor: str, keys: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from modalrec.report import plots as P
    from modalrec.report.sweep import best_by_model

    if a.exps:
        exps = json.loads(a.exps.read_text())
    else:
        res = subprocess.run(["dvc", "exp", "show", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
        exps = json.loads(res.stdout)
    exps = finished(exps)
    ds = a.dataset or yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["dataset"]
    test = monitor.replace("valid/", "test/")
    best = best_by_model(exps, ds, models, monitor, show=(test,), params=tuple(keys), prefix=a.search + "-")
    md = [f"Search `{a.search}` on `{ds}`: each model's experiment with the best `{monitor}` (mean over seeds); "
          f"`{test}` at that point.", "", f"| model | experiment | trials | {monitor} | {test} | chosen values |",
          "|---|---|---|---|---|---|"]
    for m in models:
        b = best.get(m)
        if b is None:
            md.append(f"| `{m}` | (no finished experiment) | 0 | | | |")
            continue
        vals = ", ".join(f"{k}={v}" for k, v in b["params"].items() if v is not None)
        t = f"{b[test]:.4f}" if isinstance(b.get(test), (int, float)) else "n/a"
        md.append(f"| `{m}` | {b['exp']} | {b['n']} | {b[monitor]:.4f} | {t} | {vals} |")
    md += ["", f"Every finished experiment, `{monitor}` (validation only):", "",
           "| experiment | " + " | ".join(f"`{m}`" for m in models) + " |", "|---|" + "---|" * len(models)]
    for name, data in P.exp_rows(exps):
        if name.startswith(a.search + "-"):
            vals = [P.exp_value(data.get("metrics") or {}, f"{ds}/{m}/{monitor}") for m in models]
            md.append(f"| {name} | " + " | ".join(f"{v:.4f}" if isinstance(v, (int, float)) else "" for v in vals) + " |")
    print("\n".join(md))
    if a.out:
        grid_cmds = [f"python benchmarks/search.py {a.search} --queue {q}" for q in a.queued] or [
            f"python benchmarks/search.py {a.search} --queue --dataset {ds}" +
            (f" --seeds {' '.join(map(str, a.seeds))}" if a.seeds else "") + (" --own" if a.own else "") +
            "".join(f" --at {kv}" for kv in a.at) + "".join(f" --set {shlex.quote(kv)}" for kv in a.set)]
        head = [f"# Hyper-parameter search `{a.search}` on `{ds}`", "",
                "Generated by `benchmarks/search.py --select` from the DVC experiments; rebuild with:", "",
                "```bash", *grid_cmds, "dvc queue start -j 1   # then `dvc queue status` until every experiment has run",
                f"python benchmarks/search.py {a.search} --select --dataset {ds} --out docs/results/{a.out.name}", "```", "",
                "Each point is one `dvc exp run` of the real pipeline restricted to the comparison's runs; the shared "
                "axes take the same values for every model, so each side gets the same trials; values are means "
                "over the experiment's seeds (`reports/metrics.json`); test is read only at each model's chosen "
                "point.", ""]
        from modalrec.io import atomic_path

        with atomic_path(a.out) as tmp:
            tmp.write_text("\n".join(head + md) + "\n")


if __name__ == "__main__":
    main()
