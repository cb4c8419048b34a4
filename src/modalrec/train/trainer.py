"""One training loop for every model.

Per epoch: ``model.on_epoch_start(epoch)`` -> per-group LR multipliers -> all-position batches (shuffled by
(seed, epoch); logs ``train/loss`` and, when the loss is a dict, the epoch mean of each other scalar entry as
``train/<name>``, e.g. KDSR's ``train/rec`` and ``train/cdl/image_code``) -> validation (and test when
``track_test``) -> optional ``epoch_callback`` (extra logs, e.g. KDSR's modality-forgetting analysis) -> dvclive
-> ``best.pt`` when the monitored metric improves -> ``last.pt``.

``last.pt`` holds the model, optimizer, scaler, epoch, early-stopping state, history and every RNG state, so a run
interrupted after epoch e and resumed finishes with exactly the weights of an uninterrupted run (on CPU; tested).
A finished run's ``last.pt`` is marked ``finished`` and never resumed: running again retrains from scratch.

Under ``torchrun`` (a process group: :mod:`modalrec.train.distributed`) every rank runs this loop on its shard of
each global batch through DistributedDataParallel; evaluation is sharded and gathered; only rank 0 writes. With
one process nothing of that runs: the loop is exactly the single-device one.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import keep_freed_memory
from ..data.batching import EvalInstances, TrainWindows, sharded_train_batches, train_batches
from ..errors import ParamError
from ..evaluate.protocol import EvalConfig, evaluate
from ..io import write_json
from ..losses.sampled import KINDS as LOSSES, SAMPLING, OutputLoss
from ..models.base import SeqRecModel
from ..params import dataclass_from
from . import checkpoint as ckpt
from . import distributed as ddp
from .schedules import LRSchedule

EpochCallback = Callable[[int, SeqRecModel, dict[str, float]], "dict[str, float] | None"]


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw
    clip_grad: float | None = 5.0  # max gradient norm; None = off
    patience: int = 5  # epochs without improvement of `monitor` before stopping; 0 = never stop early
    min_epochs: int = 0  # early stopping never ends a run before this epoch (KDSR: warm-up + patience; see hold_until)
    monitor: str | None = "valid/ndcg@10"  # "<valid|test>/<metric>"; None = keep the last epoch
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16 + GradScaler); ignored on CPU
    track_test: bool = False  # also evaluate test every epoch (needed by evaluate.select_on: test_max)
    resume: bool = True  # resume from an unfinished last.pt with the same fingerprint
    loss: str = "full"  # full | sampled | inbatch: the softmax of models that train one over the catalogue
    num_negatives: int = 1000  # loss: sampled: negatives shared by a batch
    sampling: str = "popularity"  # loss: sampled: proposal, uniform | popularity (count + 1); logQ-corrected
    nproc: int = 1  # data-parallel processes the train stage launches (torchrun's engine; 1 = this process)

    def hold_until(self, epoch: int) -> None:
        """Patience counts from ``epoch`` (a schedule's end: KDSR's warm-up, ODMT's distillation ramp): with early
        stopping on, ``min_epochs`` becomes at least ``epoch + patience``."""
        if self.monitor is not None and self.patience > 0:
            self.min_epochs = max(int(self.min_epochs), int(epoch) + int(self.patience))

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ParamError("train.optimizer", f"must be 'adam' or 'adamw', got {self.optimizer!r}")
        for k in ("epochs", "batch_size", "nproc"):
            if int(getattr(self, k)) < 1:
                raise ParamError(f"train.{k}", "must be >= 1")
        if int(self.min_epochs) < 0:
            raise ParamError("train.min_epochs", "must be >= 0")
        if self.loss not in LOSSES:
            raise ParamError("train.loss", f"must be one of {LOSSES}, got {self.loss!r}")
        if self.sampling not in SAMPLING:
            raise ParamError("train.sampling", f"must be one of {SAMPLING}, got {self.sampling!r}")
        if int(self.num_negatives) < 1:
            raise ParamError("train.num_negatives", "must be >= 1")
        if not self.lr > 0:
            raise ParamError("train.lr", "must be > 0")
        if self.monitor is not None:
            split = self.monitor.split("/", 1)[0]
            if split not in ("valid", "test") or "/" not in self.monitor:
                raise ParamError("train.monitor", f"must look like 'valid/ndcg@10', got {self.monitor!r}")
            if split == "test" and not self.track_test:
                raise ParamError("train.monitor", "monitoring test needs train.track_test: true")

    @classmethod
    def from_params(cls, section: dict[str, Any], key: str = "train") -> "TrainConfig":
        return dataclass_from(cls, section, key, "trainer option")


@dataclass
class TrainResult:
    best_epoch: int
    best_value: float | None
    epochs_run: int
    history: list[dict[str, float]]
    resumed_from: int  # 0 = fresh start
    seconds: float


class Trainer:
    def __init__(self, model: SeqRecModel, windows: TrainWindows, cfg: TrainConfig, out_dir: str | Path,
                 seed: int, valid: EvalInstances | None = None, test: EvalInstances | None = None,
                 eval_cfg: EvalConfig | None = None, device: str | torch.device = "cpu",
                 lr_schedule: LRSchedule | None = None, epoch_callback: EpochCallback | None = None,
                 fingerprint: str = "", live: bool = True, progress: bool = True):
        self.model, self.windows, self.cfg = model, windows, cfg
        self.out = Path(out_dir)
        self.seed, self.valid, self.test = int(seed), valid, test
        self.eval_cfg = eval_cfg or EvalConfig()
        self.device = torch.device(device)
        self.lr_schedule, self.epoch_callback = lr_schedule, epoch_callback
        self.fingerprint, self.use_live, self.progress = fingerprint, live, progress
        self.loss_parts: dict[str, float] = {}  # the last epoch's loss components (models whose loss is a dict)
        if cfg.monitor is not None:
            split = cfg.monitor.split("/", 1)[0]
            inst = valid if split == "valid" else test
            if inst is None or len(inst) == 0:
                raise ParamError("train.monitor", f"{cfg.monitor!r} but the split has no {split} instances "
                                                  "(set train.monitor: null, or use a split with a validation part)")

    # -- pieces --
    def _optimizer(self) -> torch.optim.Optimizer:
        groups = self.model.param_groups(self.cfg.lr)
        for g in groups:
            g.setdefault("name", "all")
            g["base_lr"] = g["lr"]
        cls = torch.optim.AdamW if self.cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def _apply_schedule(self, opt: torch.optim.Optimizer, epoch: int) -> None:
        for g in opt.param_groups:
            mult = 1.0 if self.lr_schedule is None else float(self.lr_schedule(epoch, g["name"]))
            g["lr"] = g["base_lr"] * mult

    def _output_loss(self) -> OutputLoss | None:
        """``train.loss``'s replacement of the full softmax (None = full), its proposal from the windows' items."""
        if self.cfg.loss == "full":
            return None
        items = self.windows.items
        return OutputLoss(self.cfg.loss, self.cfg.num_negatives, self.cfg.sampling,
                          np.bincount(items[items > 0].ravel(), minlength=1))

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    def _eval_all(self) -> dict[str, float]:
        logs: dict[str, float] = {}
        for name, inst in (("valid", self.valid), ("test", self.test if self.cfg.track_test else None)):
            if inst is not None and len(inst):
                res = evaluate(self.model, inst, self.eval_cfg, self.device, progress=self.progress)
                logs.update({f"{name}/{k}": v for k, v in res.metrics.items()})
        return logs

    # -- the loop --
    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train until ``cfg.epochs`` or early stopping. ``stop_after`` ends this call after that many epochs
        (a clean interruption, used to test resume). Bit-for-bit repeatable on CPU given the seed
        (:func:`deterministic_on_cpu`)."""
        if torch.device(self.device).type == "cpu":
            keep_freed_memory()  # no page faults for every step's activations (modalrec.keep_freed_memory)
        with deterministic_on_cpu(self.device):
            return self._fit(stop_after)

    def _fit(self, stop_after: int | None) -> TrainResult:
        cfg, model = self.cfg, self.model
        self.rank, self.world = ddp.world()
        main = self.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        ckpt.seed_everything(self.seed + self.rank)  # rank 0 (and a single process): the seed itself
        model.to(self.device)
        model.set_output_loss(self._output_loss())
        self.ddp_model = ddp.wrap(model, self.device) if self.world > 1 else None
        opt = self._optimizer()
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and cfg.amp
                                      and not torch.cuda.is_bf16_supported())
        state = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad": 0, "history": []}
        resumed_from = 0
        last = self.out / "last.pt"
        prev = ckpt.load(last) if cfg.resume and main and last.exists() else None
        if prev is not None and (prev.get("finished") or prev.get("fingerprint") != self.fingerprint
                                 or prev.get("world", 1) != self.world):
            prev = None
        if self.world > 1:  # rank 0 read it; every rank resumes from the same state
            prev = ddp.broadcast(prev)
        if prev is not None:
            model.load_state_dict(prev["model"])
            opt.load_state_dict(prev["optimizer"])
            scaler.load_state_dict(prev["scaler"])
            state = prev["state"]
            ckpt.set_rng_state(prev["rng_ranks"][self.rank] if self.world > 1 else prev["rng"])
            resumed_from = state["epoch"]
            if main:
                print(f"resuming from {last} after epoch {resumed_from}")
        live = None
        if self.use_live and main:
            from dvclive import Live

            live = Live(str(self.out / "dvclive"), resume=resumed_from > 0, dvcyaml=False, save_dvc_exp=False)
        stopped = False
        ran = 0
        model.on_fit_start(self.windows)
        try:
            for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
                model.on_epoch_start(epoch)
                self._apply_schedule(opt, epoch)
                logs = {"train/loss": self._train_epoch(opt, scaler, epoch)}
                logs.update(self.loss_parts)  # train/<part>: the epoch means of the other entries of a loss dict
                logs.update({f"lr/{g['name']}": g["lr"] for g in opt.param_groups})
                logs.update(self._eval_all())
                if self.epoch_callback is not None:
                    logs.update(self.epoch_callback(epoch, model, dict(logs)) or {})
                improved = self._early_stopping(state, epoch, logs)
                if improved and main:
                    ckpt.save(self.out / "best.pt", {"model": ckpt.state_copy(model), "epoch": epoch,
                                                     "monitor": cfg.monitor, "value": logs.get(cfg.monitor or "")})
                state["history"].append({"epoch": epoch, **logs})
                if live is not None:
                    for k, v in logs.items():
                        live.log_metric(k, float(v))
                    live.next_step()
                stopped = (cfg.monitor is not None and cfg.patience > 0 and state["bad"] >= cfg.patience
                           and epoch >= cfg.min_epochs)
                self._save_last(opt, scaler, state, finished=stopped or epoch == cfg.epochs)
                mon = f" {cfg.monitor}={logs[cfg.monitor]:.4f}" if cfg.monitor in logs else ""
                if main:
                    print(f"epoch {epoch}: loss={logs['train/loss']:.4f}{mon}" + (" *" if improved else ""), flush=True)
                ran += 1
                if stopped or (stop_after is not None and ran >= stop_after):
                    break
        finally:
            if live is not None:
                live.end()
        if main:
            write_json(self.out / "history.json", state["history"])
        best = None if state["best_epoch"] == 0 or cfg.monitor is None else state["best_value"]
        return TrainResult(state["best_epoch"], best, state["epoch"], state["history"], resumed_from,
                           time.perf_counter() - t_start)

    def _early_stopping(self, state: dict, epoch: int, logs: dict[str, float]) -> bool:
        if self.cfg.monitor is None:  # keep the last epoch
            state["best_epoch"], state["epoch"] = epoch, epoch
            return True
        value = float(logs[self.cfg.monitor])
        state["epoch"] = epoch
        if value > state["best_value"] or state["best_epoch"] == 0:
            state["best_value"], state["best_epoch"], state["bad"] = value, epoch, 0
            return True
        state["bad"] += 1
        return False

    def _save_last(self, opt, scaler, state: dict, finished: bool) -> None:
        rng = ckpt.rng_state()
        extra = {"world": self.world, "rng_ranks": ddp.all_gather(rng)} if self.world > 1 else {}
        if self.rank == 0:
            ckpt.save(self.out / "last.pt", {"model": ckpt.state_copy(self.model), "optimizer": opt.state_dict(),
                                             "scaler": scaler.state_dict(), "state": state, "rng": rng,
                                             "fingerprint": self.fingerprint, "finished": finished, **extra})

    def _train_epoch(self, opt: torch.optim.Optimizer, scaler, epoch: int) -> float:
        model, cfg = self.model, self.cfg
        model.train()
        n_batches = -(-len(self.windows) // cfg.batch_size)
        total, count, seqs, t0 = 0.0, 0, 0, time.perf_counter()
        parts: dict[str, list] = {}  # name -> [running sum (a tensor: no device sync per batch), batches]
        if self.world > 1:  # (this rank's shard of each global batch, its weight in the global mean)
            batches = sharded_train_batches(self.windows, cfg.batch_size, self.seed, epoch, self.rank, self.world)
        else:
            batches = ((b, 1.0) for b in train_batches(self.windows, cfg.batch_size, self.seed, epoch))
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch}", leave=False,
                   disable=None if self.progress and self.rank == 0 else True)
        for batch, weight in bar:
            batch = batch.to(self.device)
            with self._autocast():
                out = model.loss(batch) if self.ddp_model is None else self.ddp_model(batch)
            loss = out["loss"] if isinstance(out, dict) else out
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} (lower train.lr or set clip_grad)")
            opt.zero_grad(set_to_none=True)
            if self.world > 1:  # DDP averages the ranks' gradients: weight makes it the global batch's mean
                loss = loss * weight
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(opt)
            scaler.update()
            total += loss.item() / self.world
            count += 1
            if isinstance(out, dict):
                for k, v in out.items():
                    if k != "loss" and (isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)):
                        acc = parts.setdefault(k, [0.0, 0])
                        acc[0] = acc[0] + (v.detach().float().reshape(()) if torch.is_tensor(v) else float(v))
                        acc[1] += 1
            seqs += batch.input_ids.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}", seq_s=f"{seqs / (time.perf_counter() - t0):.0f}")
        self.loss_parts = {f"train/{k}": float(v) / n for k, (v, n) in parts.items()}
        if self.world > 1:  # the mean over ranks: every rank logs (and decides on) the same values
            total = ddp.all_sum(total)
            self.loss_parts = {k: ddp.all_sum(v) / self.world for k, v in sorted(self.loss_parts.items())}
        return total / max(count, 1)


@contextmanager
def deterministic_on_cpu(device: torch.device):
    """PyTorch's deterministic kernels while training on CPU: some CPU backward kernels accumulate with parallel
    atomic adds whose order changes from run to run, e.g. the backward of advanced indexing ``x[idx]`` with repeated
    indices (``index_put_`` with accumulate: ODMT's per-batch item tower, the graph backbones), so two runs with the
    same seed drifted apart in the last bits and then in their selected epochs. The deterministic versions sort
    instead. CUDA runs keep the fast kernels (determinism there would need cuBLAS settings and costs speed); the
    previous global setting is restored afterwards."""
    if torch.device(device).type != "cpu":
        yield
        return
    import torch.utils.deterministic as det

    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = det.fill_uninitialized_memory
    # torch.use_deterministic_algorithms also imports torch._inductor (1.5-2.4 s a process) only to set Inductor's
    # own flag; nothing here compiles, so the kernels' switch is set directly
    set_deterministic = torch._C._set_deterministic_algorithms
    set_deterministic(True, warn_only=True)
    det.fill_uninitialized_memory = False  # NaN-filling every torch.empty (a debugging aid) cost KDSR ~5% per step
    try:
        yield
    finally:
        set_deterministic(prev, warn_only=prev_warn)
        det.fill_uninitialized_memory = prev_fill


def history_metrics(history: list[dict[str, float]], split: str) -> list[dict[str, float]]:
    """The per-epoch ``<split>/<metric>`` values of a history, with the prefix removed."""
    p = f"{split}/"
    return [{k[len(p):]: v for k, v in row.items() if k.startswith(p)} for row in history]


def as_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)

