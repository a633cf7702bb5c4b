"""Data preprocessing: what centring, normalising, PCA and whitening do, and why it matters.

Part 1 fits each method of :mod:`cnncalc.train.preprocess` on a data set (``synthetic`` or
``mnist:DIR`` via :func:`cnncalc.train.data.load`) and reports, before and after: per-channel mean
and std, and the covariance of the flattened images (mean variance, mean |off-diagonal|
covariance). The mean image and the covariance matrix of each result are kept for the plot.

Part 2 is the lecture's regression example: a linear model ``y = w1 x1 + w2 x2 + b`` with
``x1`` in the 100s and ``x2`` in the 0.001s, trained by plain gradient descent
(:mod:`cnncalc.optim`'s ``sgd``) on the mean squared error, before and after normalising
the features. The Hessian of the loss is ``A^T A / N`` (``A`` = features with a column of ones);
its condition number kappa bounds how fast gradient descent can go: with the step 1 / lambda_max
the slowest direction shrinks by (1 - 1/kappa) per step. Raw features give kappa ~ 1e12: the
weight of x2 barely moves. Normalised features give kappa ~ 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.labs import data_rng
from cnncalc.train.preprocess import PREPROCESSORS

__all__ = ["METHODS", "MethodStats", "PreprocessLab", "RegressionRun", "regression", "run",
           "statistics"]

METHODS = PREPROCESSORS.names()


@dataclass
class MethodStats:
    method: str
    channel_mean: list[float]
    channel_std: list[float]
    variance_mean: float          # mean of the covariance diagonal (per-pixel variance)
    offdiag_abs_mean: float       # mean |covariance| between different pixels
    mean_abs: float               # mean |mean image| (0 once centred)


@dataclass
class RegressionRun:
    features: str                 # raw / normalized
    condition_number: float
    lr: float
    steps_to_converge: int | None  # loss gap <= tol * initial gap; None: not within max_steps
    final_gap_ratio: float        # (L - L*) / (L0 - L*) at the end
    predicted_steps: float        # kappa * ln(1 / tol), the bound for the slowest direction
    initial_grad: list[float]     # |dL/dw1|, |dL/dw2| at w = 0
    weights: list[float]          # w1, w2, b at the end (in the run's own feature units)


@dataclass
class PreprocessLab:
    data: str
    n: int
    shape: list[int]              # C, H, W
    methods: list[MethodStats]
    regression: list[RegressionRun]
    feature_scales: dict          # the regression inputs' means and stds
    tol: float
    max_steps: int
    mean_images: dict = field(default_factory=dict, repr=False)   # method -> (C, H, W)
    covariances: dict = field(default_factory=dict, repr=False)   # method -> (D, D) (D <= 1024)


def statistics(method: str, x: np.ndarray, keep: bool = True):
    """Fit ``method`` on ``x`` (N, C, H, W) and describe the transformed data."""
    from cnncalc.train import preprocess

    p = preprocess.fit(method, x.astype(np.float64))
    y = p.transform(x.astype(np.float64))
    n = y.shape[0]
    flat = y.reshape(n, -1)
    mean = flat.mean(axis=0)
    xc = flat - mean
    cov = xc.T @ xc / n
    d = cov.shape[0]
    diag = np.diag(cov)
    off = (np.abs(cov).sum() - np.abs(diag).sum()) / max(d * d - d, 1)
    stats = MethodStats(p.name, y.mean(axis=(0, 2, 3)).tolist(), y.std(axis=(0, 2, 3)).tolist(),
                        float(diag.mean()), float(off), float(np.abs(mean).mean()))
    return stats, mean.reshape(y.shape[1:]), (cov if keep and d <= 1024 else None)


def _regression_data(n: int, seed: int):
    rng = data_rng(seed)
    x1 = rng.uniform(80.0, 350.0, n)          # "114.8, 338.1, 98.8, ..."
    x2 = rng.uniform(0.0015, 0.0035, n)       # "0.00323, 0.00183, 0.00279, ..."
    t = 0.005 * x1 + 1000.0 * x2 + 0.5 + rng.normal(0.0, 0.1, n)
    return np.stack([x1, x2], axis=1), t


def _gd(a: np.ndarray, t: np.ndarray, label: str, tol: float, max_steps: int) -> RegressionRun:
    from cnncalc import optim

    n = a.shape[0]
    h = a.T @ a / n
    eig = np.linalg.eigvalsh(h)
    kappa = float(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    lr = float(1.0 / eig[-1])
    w_star, *_ = np.linalg.lstsq(a, t, rcond=None)

    def loss(w):
        r = a @ w - t
        return 0.5 * float(r @ r) / n

    def grad(w):
        return a.T @ (a @ w - t) / n

    w = np.zeros(a.shape[1])
    l_star = loss(w_star)
    gap0 = loss(w) - l_star
    g0 = grad(w)
    opt = optim.create("sgd", lr=lr)
    params = {"w": w}
    hit = None
    for step in range(1, max_steps + 1):
        opt.step(params, {"w": grad(w)})
        if (loss(w) - l_star) <= tol * gap0:
            hit = step
            break
    return RegressionRun(label, kappa, lr, hit, max(loss(w) - l_star, 0.0) / gap0,
                         kappa * math.log(1.0 / tol), [abs(float(g0[0])), abs(float(g0[1]))],
                         [float(v) for v in w])


def regression(*, n: int = 100, tol: float = 1e-6, max_steps: int = 10_000, seed: int = 0):
    """The lecture's example before and after normalisation; returns (runs, feature scales)."""
    x, t = _regression_data(n, seed)
    ones = np.ones((n, 1))
    mu, sd = x.mean(axis=0), x.std(axis=0)
    raw = _gd(np.hstack([x, ones]), t, "raw", tol, max_steps)
    norm = _gd(np.hstack([(x - mu) / sd, ones]), t, "normalized", tol, max_steps)
    scales = {"x1_mean": float(mu[0]), "x1_std": float(sd[0]),
              "x2_mean": float(mu[1]), "x2_std": float(sd[1])}
    return [raw, norm], scales


def run(data: str = "synthetic", *, n: int = 2000, methods=METHODS, seed: int = 0,
        tol: float = 1e-6, max_steps: int = 10_000, keep_arrays: bool = True) -> PreprocessLab:
    """Both parts; ``n`` training images of ``data`` are used for part 1."""
    from cnncalc.train.data import load

    if n < 2:
        raise TrainError(f"n must be >= 2; got {n}")
    if not 0 < tol < 1:
        raise TrainError(f"tol must be in (0, 1); got {tol}")
    ds = load(data, seed=seed)
    x = ds.x_train[:n]
    rows, means, covs = [], {}, {}
    for m in methods:
        st, mean, cov = statistics(m, x, keep_arrays)
        rows.append(st)
        if keep_arrays:
            means[st.method] = mean
            if cov is not None:
                covs[st.method] = cov
    runs, scales = regression(tol=tol, max_steps=max_steps, seed=seed)
    return PreprocessLab(ds.name or str(data), int(x.shape[0]), list(x.shape[1:]), rows, runs,
                         scales, tol, max_steps, means, covs)
