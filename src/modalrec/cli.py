"""The `modalrec` command line: one command per pipeline stage, for every model family.

Each command reads ``params.yaml`` (or ``--params``) and calls the stage runner in :mod:`modalrec.stages`; the DVC
stages run the same commands (``pipeline/<stage>.py`` hands its arguments to :func:`main`), so the two paths are one.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from .errors import ModalrecError
from .params import load_params

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="modalrec: multi-modal sequential recommendation (KDSR, ODMT and baselines).")

def run_main(fn: Callable[[], object]) -> None:
    """Run a command; a library error (:class:`~modalrec.errors.ModalrecError`: it names the file, line or
    parameter) becomes one line on stderr and exit status 2, never a traceback."""
    try:
        fn()
    except ModalrecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read")
DATASET = typer.Option(None, "--dataset", help="override base.dataset")
SEED = typer.Option(None, "--seed", help="default: the first of base.seeds")


def _stage(name: str, params: Path, **kwargs) -> None:
    def go() -> None:
        mod = importlib.import_module(f"modalrec.stages.{name}")
        mod.run(load_params(params), **{k: v for k, v in kwargs.items() if v is not None})

    run_main(go)


@app.command()
def prepare(params: Path = PARAMS, dataset: Optional[str] = DATASET):
    """Read raw files, filter (core-k), split; write data/prepared/<dataset>/."""
    _stage("prepare", params, dataset=dataset)


@app.command()
def encode(params: Path = PARAMS,
           modality: str = typer.Option(..., help="image, text, image_tokens or text_tokens (an encode.* entry)"),
           dataset: Optional[str] = DATASET):
    """Encode item images or texts into data/features/<dataset>/<modality>.parquet (or <modality>.arrow for tokens)."""
    _stage("encode", params, modality=modality, dataset=dataset)


@app.command()
def compress(params: Path = PARAMS, modality: str = typer.Option(..., help="image or text"),
             dataset: Optional[str] = DATASET):
    """Fit the autoencoder on a feature cache; write data/compressed/<dataset>/<modality>.parquet."""
    _stage("compress", params, modality=modality, dataset=dataset)


@app.command()
def distill(params: Path = PARAMS, dataset: Optional[str] = DATASET):
    """Fit the KDSR correlation teacher (codebooks); write models/<dataset>/teacher/."""
    _stage("distill", params, dataset=dataset)


@app.command()
def train(model: str = typer.Argument(..., help="a model name from params.yaml `models`, of any family"),
          params: Path = PARAMS, dataset: Optional[str] = DATASET, seed: Optional[int] = SEED):
    """Train one model of any family (baselines, KDSR, ODMT); write models/<dataset>/<model>/s<seed>/.

    The model's family section (`kdsr`: presets, backbones, asynchronous LR, forgetting probe; `odmt`: per-dataset
    T/alpha, its trainer and protocol) is folded in by modalrec.runs.resolve_run. Resumes an interrupted run."""
    _stage("train", params, model=model, dataset=dataset, seed=seed)


@app.command()
def evaluate(model: str = typer.Argument(..., help="a trained model name, of any family"), params: Path = PARAMS,
             dataset: Optional[str] = DATASET, seed: Optional[int] = SEED):
    """Full-ranking evaluation of one trained model; write reports/<dataset>/<model>/s<seed>/.

    metrics.json (valid/test metrics and the protocol) and per_user.parquet (test ranks, per-branch ranks)."""
    _stage("evaluate", params, model=model, dataset=dataset, seed=seed)


@app.command()
def metrics(params: Path = PARAMS, dataset: Optional[str] = DATASET):
    """Collect the listed runs' reports/<dataset>/<model>/s<seed>/metrics.json into the flat reports/metrics.json."""
    _stage("metrics", params, dataset=dataset)


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
              seed: Optional[int] = SEED, dataset: Optional[str] = DATASET,
              device: str = typer.Option("cpu", help="cpu or cuda"),
              params: Path = PARAMS):
    """Top-k recommendations for given histories with a trained model (see docs/report.md)."""
    def go() -> None:
        from .params import get
        from .runs import default_seed
        from .recommend import run as rec

        p = load_params(params)
        ds = dataset or get(p, "base.dataset")
        s = seed if seed is not None else default_seed(p)
        rec(Path("models") / ds / model / f"s{s}", input, output, k, mask_history, ids, device=device)

    run_main(go)


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """The `modalrec` console script; ``pipeline/<stage>.py`` calls it with its stage's command in front."""
    app(args=args, prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    main()
