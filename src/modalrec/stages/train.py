"""Stage `train`: train one model of any family for one seed -> ``models/<ds>/<model>/s<seed>/``.

The run is :func:`modalrec.runs.resolve_run` of ``models.<model>`` (the ``train`` section, and the family's
``kdsr`` / ``odmt`` section folded in); KDSR's asynchronous LR schedule and forgetting probe come from
:func:`modalrec.runs.training_hooks`. Loads only the cached inputs the model declares
(:meth:`SeqRecModel.required_inputs`). Writes ``best.pt`` (best validation epoch), ``last.pt`` (resume),
``config.json`` (model, options, data provenance, outcome), ``history.json`` and ``dvclive/``.

Data-parallel: ``train.nproc: K`` makes the stage launch K processes of itself with torch's elastic launcher (what
``torchrun --standalone --nproc_per_node=K pipeline/train.py <model>`` does, which works too); every rank trains on
its shard of each batch (:mod:`modalrec.train.distributed`) and rank 0 writes the outputs.
"""

from __future__ import annotations

import dataclasses
import importlib
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import wall_seconds
from ..data.batching import eval_instances, train_windows
from ..errors import DataError
from ..evaluate.protocol import EvalConfig
from ..io import write_json
from ..models.base import ModelContext, build_model, make_config, model_class
from ..runs import RunSpec, resolve_run, training_hooks
from ..train import distributed as ddp
from ..train.trainer import Trainer

TEACHER_MODULE = "modalrec.teacher.teacher"  # loads the "teacher" input (models/<ds>/teacher/)


def run_dir(root: str | Path, dataset: str, model: str, seed: int) -> Path:
    return Path(root) / dataset / model / f"s{seed}"


def input_paths(dataset: str, needs: list[str], data_root: str | Path = "data",
                models_root: str | Path = "models") -> dict[str, Path]:
    """Where each declared input lives (see docs/contracts.md)."""
    out = {}
    for need in needs:
        kind, _, mod = need.partition("/")
        if kind == "features":
            out[need] = Path(data_root) / "features" / dataset / f"{mod}.parquet"
        elif kind == "compressed":
            out[need] = Path(data_root) / "compressed" / dataset / f"{mod}.parquet"
        elif kind == "tokens":
            out[need] = Path(data_root) / "features" / dataset / f"{mod}_tokens.arrow"
        elif kind == "teacher":
            out[need] = Path(models_root) / dataset / "teacher"
        else:
            raise ValueError(f"unknown model input {need!r}")
    return out


def load_context(r: RunSpec, prepared: Any, data_root: str | Path = "data",
                 models_root: str | Path = "models") -> tuple[ModelContext, dict[str, Any]]:
    """Build the :class:`ModelContext` with exactly the inputs the model declares; returns it and their provenance."""
    cls = model_class(r.name, r.arch)
    cfg_obj = make_config(cls, r.cfg, f"models.{r.name}")
    needs = list(cls.required_inputs(cfg_obj))
    paths = input_paths(r.dataset, needs, data_root, models_root)
    n = prepared.n_items
    ctx = ModelContext(n_items=n, max_len=r.max_len, device=torch.device(r.device),
                       item_counts=torch.as_tensor(np.asarray(prepared.train_item_counts()), dtype=torch.float32))
    prov: dict[str, Any] = {}
    for need, path in paths.items():
        kind, _, mod = need.partition("/")
        if kind == "teacher":
            continue  # loaded after the compressed codes it needs
        if not path.exists():
            stage = {"features": "encode", "compressed": "compress", "tokens": "encode"}[kind]
            raise DataError(f"input {need!r} of model {r.name!r} is missing (run the {stage} stage first)",
                            path=path)
        if kind in ("features", "compressed"):
            from ..encode.cache import load_features

            x, has, meta = load_features(path, n)
            getattr(ctx, kind)[mod] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            prov[need] = {"path": str(path), "n_missing": int((~np.asarray(has)[1:]).sum()),
                          **{k: meta.get(k) for k in ("family", "weights", "dim", "pooling") if k in meta}}
        else:
            from ..encode.cache import load_tokens

            ctx.tokens = ctx.tokens or {}
            ctx.tokens[mod] = load_tokens(path)
            prov[need] = {"path": str(path)}
    if "teacher" in paths:
        Teacher = importlib.import_module(TEACHER_MODULE).Teacher  # by name: only KDSR runs load the teacher's code

        if not paths["teacher"].exists():
            raise DataError(f"the teacher of model {r.name!r} is missing (run the distill stage)", path=paths["teacher"])
        ctx.teacher = Teacher.load(paths["teacher"], ctx.compressed)
        prov["teacher"] = {"path": str(paths["teacher"])}
    return ctx, prov


def fingerprint(r: RunSpec, prepared: Any) -> str:
    """Identity of a training run: a resumed run must have the same options and the same data."""
    blob = json.dumps({"arch": r.arch, "cfg": r.cfg, "train": dataclasses.asdict(r.train), "seed": r.seed,
                       "dataset": r.dataset, "max_len": r.max_len, "n_items": prepared.n_items,
                       "n_users": prepared.n_users, "split": prepared.split_meta,
                       "n_train": int(np.asarray(prepared.n_train).sum())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validation_protocol(r: RunSpec) -> EvalConfig:
    """The protocol of the per-epoch validation: the model's own overrides (masking, aggregation) apply."""
    over = {k: v for k, v in r.evaluate.items() if k in ("ks", "mask_history", "aggregate", "ties", "batch_size")}
    return EvalConfig(**over)


def compute_record(device: torch.device | str) -> dict[str, Any]:
    """What a run's numbers depend on besides its seed, code, options and data: torch's version, the device and, on
    the CPU, torch's intra-op thread count (the machine's cores unless ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` says otherwise). Reductions are split across threads, so the same seed trained with 1
    and with 2 threads rounds differently and can select another epoch (docs/training.md); written to the run's
    config.json and copied into its metrics.json."""
    dev = torch.device(device)
    return {"torch": torch.__version__, "device": dev.type,
            "cpu_threads": torch.get_num_threads() if dev.type == "cpu" else None}


def run(params: dict[str, Any], model: str, seed: int | None = None, dataset: str | None = None,
        data_root: str | Path = "data", models_root: str | Path = "models", progress: bool = True) -> Path:
    from ..data.prepared import load_prepared

    r = resolve_run(params, model, seed, dataset)
    if r.train.nproc > 1 and not ddp.under_launcher():  # train.nproc: relaunch as nproc data-parallel processes
        return ddp.launch(r.train.nproc, run, params, model, r.seed, r.dataset, data_root, models_root, progress)
    device = ddp.setup(r.device)
    lr_schedule, epoch_callback = training_hooks(r, params, data_root)
    prepared = load_prepared(Path(data_root) / "prepared" / r.dataset)
    ctx, prov = load_context(r, prepared, data_root, models_root)
    torch.manual_seed(r.seed)  # model initialisation
    net = build_model(r.name, r.cfg, ctx, r.arch)
    seqs, nt, nv = prepared.sequences, np.asarray(prepared.n_train), np.asarray(prepared.n_valid)
    windows = train_windows(seqs, nt, r.max_len)
    if len(windows) == 0:
        raise DataError("no training sequence has 2 or more items", path=Path(data_root) / "prepared" / r.dataset)
    valid = eval_instances(seqs, nt, nv, "valid", r.max_len)
    test = eval_instances(seqs, nt, nv, "test", r.max_len) if r.train.track_test else None
    out = run_dir(models_root, r.dataset, r.name, r.seed)
    trainer = Trainer(net, windows, r.train, out, r.seed, valid=valid if len(valid) else None, test=test,
                      eval_cfg=validation_protocol(r), device=device, lr_schedule=lr_schedule,
                      epoch_callback=epoch_callback, fingerprint=fingerprint(r, prepared), progress=progress)
    res = trainer.fit()
    if not ddp.is_main():
        return out
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    write_json(out / "config.json", {
        "model": r.name, "arch": r.arch, "cfg": r.cfg, "evaluate": r.evaluate,
        "train": dataclasses.asdict(r.train), "seed": r.seed, "dataset": r.dataset, "max_len": r.max_len,
        "device": r.device, "compute": compute_record(device), "inputs": prov,
        "prepared": {"n_items": prepared.n_items, "n_users": prepared.n_users, "split": prepared.split_meta},
        "n_params": n_params, "n_train_windows": len(windows), "n_train_targets": windows.n_targets,
        "best_epoch": res.best_epoch, "best_value": res.best_value, "epochs_run": res.epochs_run,
        "resumed_from": res.resumed_from, "seconds": round(res.seconds, 2)})
    best = "" if res.best_value is None else f", best {r.train.monitor}={res.best_value:.4f} at epoch {res.best_epoch}"
    print(f"trained {r.name} (seed {r.seed}) on {r.dataset}: {res.epochs_run} epochs in {res.seconds:.1f}s{best}; "
          f"{n_params:,} parameters -> {out} | wall {wall_seconds():.1f} s")
    return out
