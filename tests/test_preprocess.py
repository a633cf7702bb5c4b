"""Preprocessing: fitted statistics, round trips, serialisation."""
from __future__ import annotations

import numpy as np
import pytest

from cnncalc.errors import TrainError
from cnncalc.train.preprocess import PREPROCESSORS, Preprocessor, fit


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    # correlated, non-centred, per-channel scaled data: (N, C, H, W) = (400, 3, 4, 4)
    base = rng.normal(size=(400, 48)) @ rng.normal(size=(48, 48)) * 0.3
    x = base.reshape(400, 3, 4, 4) * np.array([1.0, 5.0, 0.2])[:, None, None] + 2.0
    return x.astype(np.float32)


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
def test_round_trip_and_state(name, x):
    p = fit(name, x)
    y = p.transform(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(p.inverse_transform(y), x, rtol=1e-4, atol=1e-3)
    q = Preprocessor.from_state(p.state_dict())
    assert type(q) is type(p)
    # the same rows through the same code path: a 5-row and a 400-row float32 product take
    # different BLAS kernels (different rounding, amplified by whitening), so compare like for like
    np.testing.assert_allclose(q.transform(x), y, rtol=1e-6, atol=1e-6)
    assert p.state_dict()["name"] == name


def test_mean_image(x):
    y = fit("mean_image", x).transform(x.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-10)
    assert fit("mean_image", x).mean.shape == (3, 4, 4)


def test_channel_mean(x):
    p = fit("channel_mean", x)
    assert p.mean.shape == (3,)
    y = p.transform(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_channel_mean_std(x):
    y = fit("channel_mean_std", x).transform(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_channel_mean_std_constant_channel():
    x = np.zeros((10, 2, 2, 2), np.float32)
    x[:, 1] = np.arange(10)[:, None, None]
    y = fit("channel_mean_std", x).transform(x)
    assert np.all(np.isfinite(y))


def test_pca_decorrelates_and_sorts(x):
    p = fit("pca", x.astype(np.float64))
    y = p.transform(x.astype(np.float64)).reshape(len(x), -1)
    cov = y.T @ y / len(y)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(cov, np.diag(p.eigval), atol=1e-8 * p.eigval.max())
    assert np.all(np.diff(p.eigval) <= 0)


def test_whiten_identity_covariance(x):
    p = fit("whiten", x.astype(np.float64), eps=1e-12)
    y = p.transform(x.astype(np.float64)).reshape(len(x), -1)
    np.testing.assert_allclose(y.T @ y / len(y), np.eye(y.shape[1]), atol=1e-6)


def test_fit_on_train_only_applies_to_test(x):
    p = fit("channel_mean", x[:300])
    np.testing.assert_allclose(p.transform(x[300:]),
                               x[300:] - x[:300].mean(axis=(0, 2, 3))[:, None, None], atol=1e-5)


def test_errors(x):
    with pytest.raises(TrainError, match="unknown preprocessing 'zscore'"):
        fit("zscore", x)
    with pytest.raises(TrainError, match=r"shape \(N, C, H, W\)"):
        fit("channel_mean", x[:, 0])
    p = fit("mean_image", x)
    with pytest.raises(TrainError, match="fitted on images of shape"):
        p.transform(x[:, :2])
    with pytest.raises(TrainError, match="takes no options"):
        fit("pca", x, eps=1)
    with pytest.raises(TrainError, match="eps must be > 0"):
        fit("whiten", x, eps=0)
    with pytest.raises(TrainError, match="lacks 'mean'"):
        Preprocessor.from_state({"name": "mean_image"})
