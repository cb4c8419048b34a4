"""The compress stage's autoencoder: sigmoid codes, learns, keeps the real best state, deterministic for a seed."""

import numpy as np
import pytest

from modalrec.errors import ParamError
from modalrec.teacher.autoencoder import AEConfig, encode_all, fit_autoencoder, reconstruction_mse


def low_rank(n=400, d=32, r=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, r)) @ rng.normal(size=(r, d)) + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


def test_learns_sigmoid_codes():
    x = low_rank()
    res = fit_autoencoder(x, AEConfig(dim=8, lr=1e-2, batch_size=64, max_epochs=60, check_every=5), seed=0,
                          progress=False)
    z = encode_all(res.model, x)
    assert z.shape == (400, 8) and z.dtype == np.float32
    assert (z > 0).all() and (z < 1).all()
    assert res.summary()["reconstruction_mse_relative"] < 0.2   # a rank-4 signal fits in 8 sigmoid units


def test_keeps_the_best_state_not_the_last():
    x = low_rank(seed=1)
    # a learning rate this large makes the error jump around between checks
    res = fit_autoencoder(x, AEConfig(dim=8, lr=0.3, batch_size=32, max_epochs=40, check_every=2, patience=100,
                                      min_delta=0.0), seed=0, progress=False)
    mses = [m for _, m in res.history]
    assert mses[-1] > min(mses)            # the last state is not the best one (else this test proves nothing)
    import torch
    assert reconstruction_mse(res.model, torch.from_numpy(x)) == pytest.approx(min(mses), rel=1e-5)
    assert res.best_mse == pytest.approx(min(mses)) and res.best_epoch == res.history[mses.index(min(mses))][0]


def test_early_stopping_and_determinism():
    x = low_rank(seed=2)
    cfg = AEConfig(dim=8, lr=1e-2, batch_size=64, max_epochs=500, check_every=5, patience=2, min_delta=0.05)
    a = fit_autoencoder(x, cfg, seed=3, progress=False)
    b = fit_autoencoder(x, cfg, seed=3, progress=False)
    assert a.epochs_run < 500
    np.testing.assert_array_equal(encode_all(a.model, x), encode_all(b.model, x))


def test_bad_config():
    with pytest.raises(ParamError, match="compress.dim"):
        AEConfig.from_params({"dim": 0})
    with pytest.raises(ParamError, match="compress.lr"):
        AEConfig.from_params({"lr": -1})
    with pytest.raises(ParamError, match="compress.epochs"):
        AEConfig.from_params({"epochs": 3})
