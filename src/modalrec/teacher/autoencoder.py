"""The compress stage's autoencoder (KDSR's "linear autoencoder", paper-notes §1.3 and K9).

Encoder ``Linear(d_in, dim) + Sigmoid``, decoder ``Linear(dim, d_in)``, MSE, Adam, mini-batches over every item that
has a feature. Early stopping checks the full-data reconstruction error every ``check_every`` epochs and stops after
``patience`` checks that improved it by less than ``min_delta`` times the inputs' mean per-dimension variance (a
scale-free tolerance: the MSE of predicting the mean is that variance); unlike the released code (which kept a
*reference* to the live state dict, so "best" was the last state) the best state is really copied and restored.

The codes m̃ = sigmoid(W x + b) ∈ (0, 1)^dim feed both the teacher's correlations and the initialisation of trainable
modality tables (``item_repr: tuned``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import ParamError
from ..params import dataclass_from
from ..train.checkpoint import state_copy


@dataclass
class AEConfig:
    dim: int = 128
    lr: float = 1.0e-3
    batch_size: int = 256
    max_epochs: int = 500
    check_every: int = 10
    patience: int = 4
    min_delta: float = 1.0e-3    # improvement a check must bring, as a fraction of the input variance (0 = any)
    device: str = "auto"

    @classmethod
    def from_params(cls, section: dict, key: str = "compress") -> "AEConfig":
        cfg = dataclass_from(cls, section, key, ignore=("modalities", "seed"))
        cfg.validate(key)
        return cfg

    def validate(self, key: str = "compress") -> None:
        for name in ("dim", "batch_size", "max_epochs", "check_every", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ParamError(f"{key}.{name}", f"must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ParamError(f"{key}.lr", f"must be > 0, got {self.lr!r}")
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0):
            raise ParamError(f"{key}.min_delta", f"must be >= 0, got {self.min_delta!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParamError(f"{key}.device", f"must be auto, cpu or cuda, got {self.device!r}")


class AutoEncoder(nn.Module):
    def __init__(self, d_in: int, dim: int = 128):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, dim), nn.Sigmoid())
        self.decoder = nn.Linear(dim, d_in)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class AEResult:
    model: AutoEncoder
    best_epoch: int
    epochs_run: int
    best_mse: float          # full-data reconstruction MSE (mean over items and dimensions) of the kept state
    input_var: float         # mean per-dimension variance of the inputs (the MSE of predicting the mean)
    seconds: float
    history: list[tuple[int, float]]

    def summary(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "reconstruction_mse": self.best_mse,
                "reconstruction_mse_relative": self.best_mse / self.input_var if self.input_var > 0 else 0.0,
                "input_variance": self.input_var, "seconds": round(self.seconds, 2), "checks": self.history}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("compress.device", "cuda requested but no CUDA device is available")
    return torch.device(name)


@torch.no_grad()
def reconstruction_mse(model: AutoEncoder, x: Tensor, chunk: int = 8192) -> float:
    total = 0.0
    for s in range(0, len(x), chunk):
        xb = x[s:s + chunk]
        total += float((model(xb) - xb).pow(2).sum())
    return total / max(x.numel(), 1)


def fit_autoencoder(x: np.ndarray, cfg: AEConfig, seed: int, progress: bool = True, desc: str = "compress"
                    ) -> AEResult:
    """Fit the AE on ``x [n, d_in]`` (the items that have a feature); deterministic given ``seed`` on CPU."""
    cfg.validate()
    if len(x) == 0:
        raise ParamError("compress", "no item has a feature to compress")
    t0 = time.perf_counter()
    device = _device(cfg.device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    model = AutoEncoder(xt.shape[1], cfg.dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_mse, best_state, best_epoch, bad = math.inf, state_copy(model), 0, 0
    history: list[tuple[int, float]] = []
    n = len(xt)
    var = float(xt.var(0, unbiased=False).mean())
    bar = tqdm(total=cfg.max_epochs, desc=desc, unit="ep", leave=False, disable=not progress)
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        for s in range(0, n, cfg.batch_size):
            xb = xt[perm[s:s + cfg.batch_size]]
            loss = (model(xb) - xb).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % cfg.check_every and epoch != cfg.max_epochs:
            bar.update(1)
            continue
        model.eval()
        mse = reconstruction_mse(model, xt)
        history.append((epoch, mse))
        if mse < best_mse - cfg.min_delta * var:
            best_mse, best_state, best_epoch, bad = mse, state_copy(model), epoch, 0
        else:
            if mse < best_mse:  # a small improvement: keep the better state, but it counts as a bad check
                best_mse, best_state, best_epoch = mse, state_copy(model), epoch
            bad += 1
        bar.update(1)
        bar.set_postfix(mse=f"{mse:.5f}", best=best_epoch)
        if bad >= cfg.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return AEResult(model.cpu(), best_epoch, epoch, best_mse, var, time.perf_counter() - t0, history)


@torch.no_grad()
def encode_all(model: AutoEncoder, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """m̃ for the rows of ``x`` (float32 ``[n, dim]``)."""
    model = model.eval().cpu()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = [model.encode(xt[s:s + chunk]) for s in range(0, len(xt), chunk)]
    return (torch.cat(out) if out else torch.zeros(0, model.encoder[0].out_features)).numpy()


def config_dict(cfg: AEConfig, d_in: int) -> dict:
    return {"arch": "autoencoder", "d_in": int(d_in), **asdict(cfg)}
