"""`modalrec recommend`: top-k items for given histories with a trained model.

The model is rebuilt exactly as the evaluate stage does: ``config.json`` of the run (arch, options, max_len) ->
the engine's :func:`modalrec.stages.train.load_context` (only the cached inputs the model declares) ->
:func:`modalrec.models.build_model` -> ``best.pt``. Item ids are translated with the dataset's
``data/prepared/<ds>/items.parquet`` (``item`` <-> ``item_orig``).

Input: a JSON lines file, one history per line, either a bare list ``["B001", "B002"]`` or an object
``{"id": "u1", "history": ["B001", "B002"], "k": 5}`` (``id`` and ``k`` optional). Items are the dataset's
original ids (``ids="original"``, default) or internal ids 1..N (``ids="internal"``), oldest first. Original ids
the model does not know (filtered out by prepare) are dropped and listed in the output's ``dropped``.

Output: one JSON object per input line, in order:
``{"id": ..., "items": [original ids], "item_ids": [internal ids], "scores": [...], "dropped": [...]}``,
best first; equal scores are ordered by item id (deterministic). With ``mask_history`` the history's items are
never recommended.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import polars as pl
import torch

from .errors import DataError, ParamError
from .io import atomic_path, read_json, read_text

ID_KINDS = ("original", "internal")


@dataclass
class Request:
    id: Any
    history: list[int]  # internal ids, oldest first
    k: int | None = None
    dropped: list[Any] = field(default_factory=list)


@dataclass
class TrainedModel:
    """A trained run ready to score: the network plus the id mapping of its dataset."""

    net: torch.nn.Module
    name: str
    dataset: str
    seed: int | None
    max_len: int
    n_items: int
    item_orig: np.ndarray  # [N+1] original id of each internal id (row 0 = "")
    device: torch.device

    def orig_to_internal(self) -> dict[str, int]:
        return {str(o): i for i, o in enumerate(self.item_orig) if i > 0}


class _PreparedShim:
    """What :func:`load_context` reads from a prepared dataset (item count and training popularity), taken from
    ``items.parquet`` / ``split.parquet`` directly so recommending never loads every sequence into memory twice."""

    def __init__(self, n_items: int, counts: np.ndarray):
        self.n_items = n_items
        self._counts = counts

    def train_item_counts(self) -> np.ndarray:
        return self._counts


def load_items(prepared_dir: Path) -> np.ndarray:
    path = prepared_dir / "items.parquet"
    if not path.exists():
        raise DataError("the prepared dataset has no items table (run the prepare stage)", path=path)
    df = pl.read_parquet(path, columns=["item", "item_orig"]).sort("item")
    ids = df["item"].to_numpy()
    if len(ids) and not np.array_equal(ids, np.arange(1, len(ids) + 1)):
        raise DataError("items are not exactly 1..N", path=path, column="item")
    orig = np.empty(len(ids) + 1, dtype=object)
    orig[0] = ""
    orig[1:] = [str(x) for x in df["item_orig"].to_list()]
    return orig


def load_trained(model_dir: str | Path, data_root: str | Path = "data", models_root: str | Path | None = None,
                 device: str = "cpu") -> TrainedModel:
    """Rebuild the model of a training run directory ``models/<ds>/<model>/s<seed>/`` from its config and weights."""
    from .models.base import build_model
    from .report.popularity import train_counts_from_split
    from .runs import RunSpec, family_of
    from .stages.train import load_context
    from .train import checkpoint as ckpt
    from .train.trainer import TrainConfig

    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.exists():
        raise DataError("not a trained model directory (no config.json; train the model first)", path=cfg_path)
    conf = read_json(cfg_path)
    missing = [k for k in ("model", "arch", "cfg", "dataset", "max_len") if k not in conf]
    if missing:
        raise DataError(f"config.json lacks {missing}", path=cfg_path)
    ds = conf["dataset"]
    prepared_dir = Path(data_root) / "prepared" / ds
    item_orig = load_items(prepared_dir)
    n_items = len(item_orig) - 1
    trained_n = (conf.get("prepared") or {}).get("n_items")
    if trained_n is not None and int(trained_n) != n_items:
        raise DataError(f"the model was trained on {trained_n} items but {prepared_dir} has {n_items} "
                        "(the dataset was re-prepared: retrain)", path=cfg_path)
    counts = train_counts_from_split(prepared_dir / "split.parquet")
    if counts is None:
        counts = np.zeros(n_items + 1, dtype=np.int64)
    counts = np.pad(counts, (0, max(0, n_items + 1 - len(counts))))[: n_items + 1]
    models_root = Path(models_root) if models_root is not None else model_dir.parents[2]
    r = RunSpec(conf["model"], conf["arch"], family_of(conf["arch"]), dict(conf["cfg"]), TrainConfig(monitor=None), {}, ds,
                 int(conf.get("seed") or 0), int(conf["max_len"]), device)
    ctx, _ = load_context(r, _PreparedShim(n_items, counts), data_root, models_root)
    net = build_model(r.name, r.cfg, ctx, r.arch)
    best = ckpt.load(model_dir / "best.pt")
    try:
        net.load_state_dict(best["model"] if "model" in best else best)
    except RuntimeError as e:
        raise DataError(f"weights do not match the model built from config.json: {str(e).splitlines()[0]}",
                        path=model_dir / "best.pt") from None
    net.to(device).eval()
    return TrainedModel(net, r.name, ds, conf.get("seed"), r.max_len, n_items, item_orig, torch.device(device))


def read_requests(path: str | Path, trained: TrainedModel, ids: str = "original") -> list[Request]:
    """Parse a JSON lines file of histories (see the module docstring); errors name the line."""
    if ids not in ID_KINDS:
        raise ParamError("ids", f"must be one of {ID_KINDS}, got {ids!r}")
    path = Path(path)
    if not path.exists():
        raise DataError("histories file not found", path=path)
    lookup = trained.orig_to_internal() if ids == "original" else None
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e.msg}", path=path, line=n) from None
        if isinstance(obj, list):
            obj = {"history": obj}
        if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
            raise DataError('expected a list of items or {"history": [...]}', path=path, line=n)
        k = obj.get("k")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise DataError(f"k must be a positive integer, got {k!r}", path=path, line=n)
        hist, dropped = [], []
        for it in obj["history"]:
            if lookup is not None:
                i = lookup.get(str(it))
                if i is None:
                    dropped.append(it)
                else:
                    hist.append(i)
            else:
                if not isinstance(it, int) or isinstance(it, bool) or not 1 <= it <= trained.n_items:
                    raise DataError(f"internal item id {it!r} is not in 1..{trained.n_items}", path=path, line=n)
                hist.append(it)
        if not hist:
            raise DataError("no known item in this history" + (f" (unknown: {dropped[:5]})" if dropped else ""),
                            path=path, line=n)
        out.append(Request(obj.get("id", n), hist, k, dropped))
    return out


@torch.inference_mode()
def recommend(trained: TrainedModel, histories: list[list[int]], k: int = 10, mask_history: bool = False,
              batch_size: int = 256, ks: list[int | None] | None = None) -> list[tuple[list[int], list[float]]]:
    """Top-k internal item ids and scores per history (oldest first; the last ``max_len`` items are used).

    Masking removes every item of the *whole* history (not only the truncated part). Fewer than k items are
    returned only when the catalogue minus the masked items is smaller than k.
    """
    if k < 1:
        raise ParamError("k", f"must be >= 1, got {k}")
    net, L = trained.net, trained.max_len
    results: list[tuple[list[int], list[float]]] = []
    for s in range(0, len(histories), batch_size):
        chunk = histories[s: s + batch_size]
        width = max(min(len(h), L) for h in chunk)
        inp = torch.zeros(len(chunk), width, dtype=torch.long)
        for b, h in enumerate(chunk):
            h = h[-L:]
            inp[b, width - len(h):] = torch.as_tensor(h, dtype=torch.long)
        scores = net.score_all(inp.to(trained.device)).float().cpu()
        scores[:, 0] = -torch.inf
        if mask_history:
            for b, h in enumerate(chunk):
                scores[b, torch.as_tensor(h, dtype=torch.long)] = -torch.inf
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # ties: lower item id first
        for b in range(len(chunk)):
            kk = (ks[s + b] if ks is not None and ks[s + b] else None) or k
            top = order[b, :kk]
            top = top[torch.isfinite(scores[b, top])]
            results.append((top.tolist(), scores[b, top].tolist()))
    return results


def iter_output(trained: TrainedModel, requests: list[Request], results: Iterable[tuple[list[int], list[float]]]
                ) -> Iterator[dict[str, Any]]:
    for req, (items, scores) in zip(requests, results):
        yield {"id": req.id, "items": [trained.item_orig[i] for i in items], "item_ids": items,
               "scores": [round(float(x), 6) for x in scores], "dropped": req.dropped}


def run(model_dir: str | Path, input_path: str | Path, output: str | Path | None = None, k: int = 10,
        mask_history: bool = False, ids: str = "original", data_root: str | Path = "data",
        models_root: str | Path | None = None, device: str = "cpu", batch_size: int = 256) -> int:
    """Load, read, recommend, write JSON lines to ``output`` (atomically) or stdout; returns the number of lines."""
    trained = load_trained(model_dir, data_root, models_root, device)
    reqs = read_requests(input_path, trained, ids)
    res = recommend(trained, [r.history for r in reqs], k, mask_history, batch_size, [r.k for r in reqs])
    lines = [json.dumps(o, ensure_ascii=False) + "\n" for o in iter_output(trained, reqs, res)]
    if output is None or str(output) == "-":
        sys.stdout.writelines(lines)
    else:
        with atomic_path(output, suffix=".jsonl.tmp") as tmp:
            tmp.write_text("".join(lines))
    n_drop = sum(len(r.dropped) for r in reqs)
    print(f"recommended top-{k} for {len(reqs)} histories with {trained.name} ({trained.dataset}, seed "
          f"{trained.seed}){', history masked' if mask_history else ''}"
          f"{f'; {n_drop} unknown items dropped' if n_drop else ''}" + (f" -> {output}" if output and str(output) != "-" else ""),
          file=sys.stderr)
    return len(lines)
