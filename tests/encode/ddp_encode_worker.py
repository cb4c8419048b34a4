"""The rank processes of tests/encode/test_ddp_encode.py (spawned; a module of its own so that they can import it)."""

from pathlib import Path

import polars as pl
import torch


def run_rank(rank: int, world: int, tmp: str, jobs: list) -> None:
    import torch.distributed as dist

    from modalrec.encode.registry import EncoderConfig
    from modalrec.encode.runner import encode_catalogue

    torch.set_num_threads(1)
    tmp = Path(tmp)
    dist.init_process_group("gloo", init_method=f"file://{tmp / 'pg'}", rank=rank, world_size=world)
    try:
        items = pl.read_parquet(tmp / "items.parquet")
        for cfg, kind, name in jobs:
            out = tmp / ("ranked" if rank == 0 else f"rank{rank}") / name
            out.parent.mkdir(exist_ok=True)
            encode_catalogue(items, EncoderConfig.from_params(cfg, f"encode.{kind}"), kind, out,
                             key=f"encode.{kind}", progress=False)
    finally:
        dist.destroy_process_group()
