"""The `modalrec` command line: the same steps as the DVC pipeline, for people who don't use DVC.

Every command reads ``params.yaml`` (or ``--params``) and runs the same stage runner as ``pipeline/<stage>.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer

from .cli_utils import run_main
from .params import load_params

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="modalrec: multi-modal sequential recommendation (KDSR, ODMT and baselines).")

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read")


def _stage(name: str, params: Path, **kwargs) -> None:
    def go() -> None:
        mod = importlib.import_module(f"modalrec.stages.{name}")
        mod.run(load_params(params), **{k: v for k, v in kwargs.items() if v is not None})

    run_main(go)


@app.command()
def prepare(params: Path = PARAMS, dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Read raw files, filter (core-k), split; write data/prepared/<dataset>/."""
    _stage("prepare", params, dataset=dataset)


@app.command()
def encode(params: Path = PARAMS, modality: str = typer.Option(..., help="image or text"),
           dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Encode item images or texts into data/features/<dataset>/<modality>.parquet."""
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
          dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Train one model; write models/<dataset>/<model>/."""
    _stage("train", params, model=model, dataset=dataset)


@app.command()
def evaluate(model: str = typer.Argument(..., help="a trained model name"), params: Path = PARAMS,
             dataset: Optional[str] = typer.Option(None, help="override base.dataset")):
    """Full-ranking evaluation; write reports/<dataset>/<model>/metrics.json."""
    _stage("evaluate", params, model=model, dataset=dataset)


@app.command()
def report(params: Path = PARAMS):
    """Aggregate metrics into reports/summary.md, reports/metrics.json and plots."""
    _stage("report", params)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
