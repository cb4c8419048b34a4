"""The `modalrec` command line: the same steps as the DVC pipeline, for people who don't use DVC.

Every command reads ``params.yaml`` (or ``--params``) and runs the same stage runner as ``pipeline/<stage>.py``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Optional

# As in pipeline/*.py: idle OpenMP threads must sleep, not spin (5-10x faster small-model training on a busy CPU);
# read once when torch loads, and nothing above imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

from .cli_utils import run_main  # noqa: E402
from .errors import ModalrecError  # noqa: E402
from .params import load_params  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="modalrec: multi-modal sequential recommendation (KDSR, ODMT and baselines).")

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read")


def _stage(name: str, params: Path, **kwargs) -> None:
    def go() -> None:
        mod = importlib.import_module(f"modalrec.stages.{name}")
        mod.run(load_params(params), **{k: v for k, v in kwargs.items() if v is not None})

    run_main(go)


KDSR_ARCHS = ("kdsr", "mmsr", "kdsr_graph")  # = modalrec.stages.train_kdsr.FAMILY_ARCHS (checked by a test)


def _family_stage(stage: str, params: Path, model: str) -> str:
    """``train``/``evaluate``, or ``train_kdsr``/``evaluate_kdsr`` for a KDSR-family ``models.<model>`` entry, so the
    command resolves the model exactly as the DVC pipeline does. A missing params file or model is left to the
    stage, which reports it."""
    try:
        models = load_params(params).get("models") or {}
    except ModalrecError:
        return stage
    if not isinstance(models, dict) or model not in models:
        return stage
    entry = models[model] if isinstance(models[model], dict) else {}
    return f"{stage}_kdsr" if entry.get("arch", model) in KDSR_ARCHS else stage


@app.command()
def prepare(params: Path = PARAMS, dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Read raw files, filter (core-k), split; write data/prepared/<dataset>/."""
    _stage("prepare", params, dataset=dataset)


@app.command()
def encode(params: Path = PARAMS,
           modality: str = typer.Option(..., help="image, text, image_tokens or text_tokens (an encode.* entry)"),
           dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Encode item images or texts into data/features/<dataset>/<modality>.parquet (or <modality>.arrow for tokens)."""
    _stage("encode", params, modality=modality, dataset=dataset)


@app.command()
def compress(params: Path = PARAMS, modality: str = typer.Option(..., help="image or text"),
             dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Fit the autoencoder on a feature cache; write data/compressed/<dataset>/<modality>.parquet."""
    _stage("compress", params, modality=modality, dataset=dataset)


@app.command()
def distill(params: Path = PARAMS, dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Fit the KDSR correlation teacher (codebooks); write models/<dataset>/teacher/."""
    _stage("distill", params, dataset=dataset)


@app.command()
def train(model: str = typer.Argument(..., help="a model name from params.yaml `models`"), params: Path = PARAMS,
          dataset: Optional[str] = typer.Option(None, help="override base.dataset"),
          seed: Optional[int] = typer.Option(None, help="default: the first of base.seeds")):
    """Train one model (resuming an interrupted run); write models/<dataset>/<model>/s<seed>/.

    KDSR-family models (arch kdsr, mmsr, kdsr_graph) go through the `kdsr` section as DVC stage train_kdsr does
    (presets, backbone defaults, asynchronous LR of the modality tables, forgetting probe)."""
    _stage(_family_stage("train", params, model), params, model=model, dataset=dataset, seed=seed)


@app.command()
def evaluate(model: str = typer.Argument(..., help="a trained model name"), params: Path = PARAMS,
             dataset: Optional[str] = typer.Option(None, help="override base.dataset"),
             seed: Optional[int] = typer.Option(None, help="default: the first of base.seeds")):
    """Full-ranking evaluation; write reports/<dataset>/<model>/s<seed>/{metrics.json,per_user.parquet}.

    KDSR-family models are rebuilt and evaluated with their `kdsr`-section resolution (= DVC stage evaluate_kdsr)."""
    _stage(_family_stage("evaluate", params, model), params, model=model, dataset=dataset, seed=seed)


@app.command()
def metrics(params: Path = PARAMS, dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Collect reports/<dataset>/*/s*/metrics.json into the flat reports/metrics.json."""
    _stage("metrics", params, dataset=dataset)


@app.command("train-odmt")
def train_odmt(model: str = typer.Argument("odmt", help="an ODMT-family run (odmt, sasrec_ef, sasrec_lf, ablations)"),
               seed: Optional[int] = typer.Option(None, help="default: the first of base.seeds"), params: Path = PARAMS):
    """Train an ODMT-family run with the `odmt` params section folded in (= DVC stage train_odmt)."""
    _stage("train_odmt", params, model=model, seed=seed)


@app.command("evaluate-odmt")
def evaluate_odmt(model: str = typer.Argument("odmt", help="a trained ODMT-family run"),
                  seed: Optional[int] = typer.Option(None, help="default: the first of base.seeds"),
                  params: Path = PARAMS):
    """Evaluate an ODMT-family run (history masked, per-user, @10/@20, per-branch metrics; = evaluate_odmt)."""
    _stage("evaluate_odmt", params, model=model, seed=seed)


@app.command()
def report(params: Path = PARAMS,
           exps: bool = typer.Option(False, "--exps", help="first export `dvc exp show --json` for the sweep plot")):
    """Tables (mean ± std over seeds, significance), plots: reports/summary.md, summary.json, reports/plots/."""
    _stage("report", params, exps=exps or None)


@app.command()
def recommend(model: str = typer.Argument(..., help="a trained model name (models/<dataset>/<model>/s<seed>/)"),
              input: Path = typer.Option(..., "--input", "-i", help="JSON lines file of histories"),
              output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSON lines out (default stdout)"),
              k: int = typer.Option(10, "--k", "-k", help="items per history (a line's own \"k\" wins)"),
              mask_history: bool = typer.Option(False, "--mask-history", help="never recommend history items"),
              ids: str = typer.Option("original", help="history ids: original (dataset ids) or internal (1..N)"),
              seed: Optional[int] = typer.Option(None, help="which seed's run (default: first of base.seeds)"),
              dataset: Optional[str] = typer.Option(None, help="override base.dataset"),
              device: str = typer.Option("cpu", help="cpu or cuda"),
              params: Path = PARAMS):
    """Top-k recommendations for given histories with a trained model (see docs/report.md)."""
    def go() -> None:
        from .params import get
        from .report.recommend import run as rec

        p = load_params(params)
        ds = dataset or get(p, "base.dataset")
        s = seed if seed is not None else (get(p, "base.seeds", None) or [get(p, "base.seed", 2023)])[0]
        rec(Path("models") / ds / model / f"s{s}", input, output, k, mask_history, ids, device=device)

    run_main(go)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
