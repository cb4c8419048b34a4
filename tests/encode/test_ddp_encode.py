"""The encode stage over 2 data-parallel ranks (gloo): they share the batches and rank 0 writes one cache equal to
the single-process cache (vectors, masks, unreadable-image list, metadata), for a pooled text cache and an image
token cache with unreadable images and an uneven last round; the other rank writes nothing."""

import re
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp

from ddp_encode_worker import run_rank
from modalrec.encode.cache import load_features, load_tokens
from modalrec.encode.registry import EncoderConfig
from modalrec.encode.runner import encode_catalogue


def _meta(meta):  # the unreadable messages name a BytesIO object by its address, which differs run to run
    return {**meta, "unreadable": [re.sub(r"0x[0-9a-f]+", "0x", u) for u in meta["unreadable"]]}


def test_two_ranks_write_the_single_process_cache(items_table, tiny_text_models, tiny_vision_models, tmp_path):
    items_table.write_parquet(tmp_path / "items.parquet")
    jobs = [({"family": "hf_text", "weights": str(tiny_text_models["bert"]), "batch_size": 1,
              "template": "{title}. {description}"}, "text", "text.parquet"),
            ({"family": "hf_vision", "weights": str(tiny_vision_models["clip"]), "pooling": "tokens",
              "preprocess": "half", "image_size": 32, "batch_size": 2}, "image", "image_tokens.arrow")]
    mp.start_processes(run_rank, args=(2, str(tmp_path), jobs), nprocs=2, start_method="spawn", join=True)
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: another thread count sums a matmul in another order (last-bit drift)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for cfg, kind, name in jobs:
                encode_catalogue(items_table, EncoderConfig.from_params(cfg, f"encode.{kind}"), kind, one / name,
                                 key=f"encode.{kind}", progress=False)
    finally:
        torch.set_num_threads(threads)
    got = tmp_path / "ranked"
    a, has_a, meta_a = load_features(one / "text.parquet", 6)
    b, has_b, meta_b = load_features(got / "text.parquet", 6)
    np.testing.assert_array_equal(a, b)
    assert has_a.tolist() == has_b.tolist() and meta_a == meta_b and has_a.sum() == 4
    assert pq.read_table(one / "text.parquet").equals(pq.read_table(got / "text.parquet"))
    ta, tb = load_tokens(one / "image_tokens.arrow"), load_tokens(got / "image_tokens.arrow")
    np.testing.assert_array_equal(ta.tokens, tb.tokens)
    np.testing.assert_array_equal(ta.mask, tb.mask)
    assert ta.has.tolist() == tb.has.tolist() == [False, True, True, False, False, False, True]
    assert _meta(ta.meta) == _meta(tb.meta) and ta.meta["n_unreadable"] == 2
    assert not any((tmp_path / "rank1").rglob("*.*"))  # rank 1 wrote no cache


def test_nproc_is_validated_and_never_recorded():
    from modalrec.errors import ParamError

    with pytest.raises(ParamError, match="encode.text.nproc"):
        EncoderConfig.from_params({"family": "hf_text", "nproc": 0}, "encode.text")
    assert "nproc" not in EncoderConfig.from_params({"family": "hf_text", "nproc": 2}, "encode.text").as_dict()
