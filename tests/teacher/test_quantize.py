"""Codebooks: k-means and the trained VQ codebook fit well-separated clusters, codes are deterministic for a seed,
assignment is the exact nearest codeword, bad x is a clear error."""

import numpy as np
import pytest
import torch

from modalrec.errors import ParamError
from modalrec.teacher.quantize import QuantizerConfig, assign, fit_codebook, usage_stats


def blobs(n_per=300, k=4, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(k, d))
    x = np.concatenate([c + rng.normal(scale=0.1, size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, centres


@pytest.mark.parametrize("quantizer", ["kmeans", "vq"])
def test_recovers_separated_clusters(quantizer):
    x, centres = blobs()
    cb = fit_codebook(x, QuantizerConfig(codes=4, quantizer=quantizer, vq_epochs=30, vq_batch=256, vq_lr=0.05), seed=1)
    assert cb.shape == (4, 3) and cb.dtype == np.float32
    # every true centre has a codeword within 0.5, and every codeword is used
    dist = np.linalg.norm(centres[:, None] - cb[None], axis=-1)
    assert dist.min(1).max() < 0.5, dist
    st = usage_stats(x, cb)
    assert st["dead_codes"] == 0 and st["perplexity"] == pytest.approx(4.0, rel=0.01)
    assert st["quantisation_mse_relative"] < 0.01


@pytest.mark.parametrize("quantizer", ["kmeans", "vq"])
def test_deterministic_for_a_seed(quantizer):
    x = np.random.default_rng(3).random((2000, 8), dtype=np.float32)
    cfg = QuantizerConfig(codes=10, quantizer=quantizer, vq_epochs=3)
    a, b = fit_codebook(x, cfg, seed=7), fit_codebook(x, cfg, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fit_codebook(x, cfg, seed=8))


def test_vq_is_not_initialised_on_data_points():
    x = np.random.default_rng(0).random((500, 4), dtype=np.float32)
    one_epoch = fit_codebook(x, QuantizerConfig(codes=5, quantizer="vq", vq_epochs=1, vq_restart_dead=False,
                                                vq_lr=1e-6), seed=0)
    # with a negligible learning rate the codewords stay where the random (Gaussian) init put them: off the data
    assert not any((np.abs(x - c).sum(1) < 1e-4).any() for c in one_epoch)


def test_assign_is_the_exact_nearest_codeword():
    g = torch.Generator().manual_seed(0)
    v, cb = torch.rand(5000, 8, generator=g), torch.rand(50, 8, generator=g)
    want = torch.cdist(v.double(), cb.double()).argmin(1)
    got = assign(v, cb, chunk=777)
    assert got.dtype == torch.long and got.shape == (5000,)
    assert (got == want).float().mean() > 0.999  # float32 vs float64 may differ on near-ties only
    assert got.min() >= 0 and got.max() < 50


def test_bad_parameters():
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ParamError, match="kdsr.codes"):
        fit_codebook(x, QuantizerConfig(codes=1), seed=0)
    with pytest.raises(ParamError, match="kdsr.codes"):
        fit_codebook(x, QuantizerConfig(codes=50), seed=0)   # more codewords than sampled pairs
    with pytest.raises(ParamError, match="kdsr.quantizer"):
        fit_codebook(x, QuantizerConfig(codes=2, quantizer="pq"), seed=0)
