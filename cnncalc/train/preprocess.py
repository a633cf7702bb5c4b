"""Data preprocessing, fitted on the training set only (lecture: centre, normalise, PCA, whiten).

``p = fit(name, x_train)``; ``p.transform(x)``; ``p.inverse_transform(x)``; ``p.state_dict()``
(a dict of arrays plus ``name``, for checkpoints) and ``Preprocessor.from_state(d)``. ``x`` is
``(N, C, H, W)``; the output has the same shape and is float32 unless ``x`` is float64.

==================== ========================================================== =================
name                 transform                                                  used by
==================== ========================================================== =================
``none``             identity                                                   —
``mean_image``       ``x - mean`` with mean of shape (C, H, W)                  AlexNet
``channel_mean``     ``x - mean[c]``, 3 numbers for RGB                          VGG
``channel_mean_std`` ``(x - mean[c]) / std[c]`` (a constant channel gets std 1)  ResNet
``pca``              ``(x - mean) @ U`` on the flattened image: the coordinates     lecture
                     in the principal axes, all D kept, sorted by variance, then
                     reshaped back to (C, H, W)
``whiten``           ``pca`` then ``/ sqrt(eigval + eps)`` (eps = 1e-5)          lecture
==================== ========================================================== =================

``pca``/``whiten`` use the covariance ``X^T X / N`` of the centred flattened data (float64,
``numpy.linalg.eigh``), so they cost O(N D^2 + D^3): fine for MNIST (D = 784) or CIFAR (3072).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.registry import Param, Registry, doc_line

__all__ = ["PREPROCESSORS", "Preprocessor", "fit", "from_state"]


WHITEN_EPS = 1e-5


def _check_x(x: Any, what: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise TrainError(f"{what} must have shape (N, C, H, W); got shape {x.shape}",
                         hint="add the channel axis with x[:, None] for grey images")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TrainError(f"{what} must be numeric; got dtype {x.dtype}")
    return x


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


class Preprocessor:
    """Base class. Subclasses set ``name``, ``_arrays`` and implement ``_fit``/``_transform``."""

    name: ClassVar[str] = ""
    _arrays: ClassVar[tuple[str, ...]] = ()
    invertible: ClassVar[bool] = True

    def __init__(self, **arrays: np.ndarray):
        for k in self._arrays:
            if k not in arrays:
                raise TrainError(f"{self.name} preprocessing state lacks {k!r}",
                                 hint="the checkpoint is damaged or from another version")
            setattr(self, k, np.asarray(arrays[k], dtype=np.float64))
        self.input_shape: tuple[int, ...] | None = (
            tuple(int(s) for s in arrays["input_shape"]) if "input_shape" in arrays else None)

    # -- API ------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, x_train: np.ndarray, **kw: Any) -> Preprocessor:
        """Fit on the training images ``(N, C, H, W)``."""
        x = _check_x(x_train, "x_train")
        if x.shape[0] < 1:
            raise TrainError("cannot fit preprocessing on an empty training set")
        p = cls(**cls._fit(x.astype(np.float64, copy=False), **kw),
                input_shape=np.array(x.shape[1:]))
        return p

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply to ``x`` (N, C, H, W); returns a new float array of the same shape."""
        x = self._checked(x)
        return self._transform(x.astype(_out_dtype(x), copy=True))

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform` (up to float rounding)."""
        x = self._checked(x)
        return self._inverse(x.astype(_out_dtype(x), copy=True))

    def state_dict(self) -> dict[str, Any]:
        """``{"name": str, "input_shape": array, <arrays>}``."""
        d: dict[str, Any] = {"name": self.name}
        if self.input_shape is not None:
            d["input_shape"] = np.array(self.input_shape, dtype=np.int64)
        d.update({k: getattr(self, k).copy() for k in self._arrays})
        d.update(self._scalars())
        return d

    @staticmethod
    def from_state(d: dict[str, Any]) -> Preprocessor:
        """Rebuild from :meth:`state_dict`."""
        return from_state(d)

    def __repr__(self) -> str:
        return f"<Preprocessor {self.name} for input {self.input_shape}>"

    # -- for subclasses -------------------------------------------------------------------------

    def _checked(self, x: Any) -> np.ndarray:
        x = _check_x(x)
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise TrainError(f"preprocessing {self.name!r} was fitted on images of shape "
                             f"{tuple(self.input_shape)}; got {tuple(x.shape[1:])}",
                             hint="use the same (C, H, W) for training and test data")
        return x

    def _scalars(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _fit(cls, x: np.ndarray, **kw: Any) -> dict[str, np.ndarray]:
        return {}

    def _transform(self, x: np.ndarray) -> np.ndarray:
        return x

    def _inverse(self, x: np.ndarray) -> np.ndarray:
        return x


class NoPreprocess(Preprocessor):
    """Identity."""

    name = "none"

    def to_onnx(self, g, x: str) -> str:
        """The same transform as ONNX ops on the builder ``g`` (see cnncalc.onnx.export)."""
        return x


class MeanImage(Preprocessor):
    """Subtract the mean image, shape (C, H, W) (AlexNet)."""

    name = "mean_image"
    _arrays = ("mean",)

    @classmethod
    def _fit(cls, x, **kw):
        return {"mean": x.mean(axis=0)}

    def _transform(self, x):
        x -= self.mean.astype(x.dtype)
        return x

    def to_onnx(self, g, x):
        return g.node("Sub", [x, g.const(self.mean)])

    def _inverse(self, x):
        x += self.mean.astype(x.dtype)
        return x


class ChannelMean(Preprocessor):
    """Subtract the per-channel mean, shape (C,) (VGG)."""

    name = "channel_mean"
    _arrays = ("mean",)

    @classmethod
    def _fit(cls, x, **kw):
        return {"mean": x.mean(axis=(0, 2, 3))}

    def _transform(self, x):
        x -= self.mean.astype(x.dtype)[:, None, None]
        return x

    def to_onnx(self, g, x):
        return g.node("Sub", [x, g.const(self.mean[:, None, None])])

    def _inverse(self, x):
        x += self.mean.astype(x.dtype)[:, None, None]
        return x


class ChannelMeanStd(Preprocessor):
    """Subtract the per-channel mean, divide by the per-channel std (ResNet).

    A channel with (near) zero std (< 1e-12) is divided by 1 instead.
    """

    name = "channel_mean_std"
    _arrays = ("mean", "std")

    @classmethod
    def _fit(cls, x, **kw):
        std = x.std(axis=(0, 2, 3))
        std = np.where(std < 1e-12, 1.0, std)
        return {"mean": x.mean(axis=(0, 2, 3)), "std": std}

    def _transform(self, x):
        x -= self.mean.astype(x.dtype)[:, None, None]
        x /= self.std.astype(x.dtype)[:, None, None]
        return x

    def to_onnx(self, g, x):
        centred = g.node("Sub", [x, g.const(self.mean[:, None, None])])
        return g.node("Div", [centred, g.const(self.std[:, None, None])])

    def _inverse(self, x):
        x *= self.std.astype(x.dtype)[:, None, None]
        x += self.mean.astype(x.dtype)[:, None, None]
        return x


class PCA(Preprocessor):
    """Rotate the centred, flattened image onto its principal axes (all D components kept).

    Notes
    -----
    ``cov = Xc^T Xc / N``; ``cov = U diag(eigval) U^T`` with eigval descending;
    ``y = (x - mean) @ U``; inverse ``x = y @ U^T + mean``.
    """

    name = "pca"
    _arrays = ("mean", "components", "eigval")

    @classmethod
    def _fit(cls, x, **kw):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        mean = flat.mean(axis=0)
        xc = flat - mean
        cov = xc.T @ xc / n
        eigval, u = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        return {"mean": mean, "components": u[:, order], "eigval": np.clip(eigval[order], 0, None)}

    def _project(self, x):
        n = x.shape[0]
        dt = x.dtype
        flat = x.reshape(n, -1) - self.mean.astype(dt)
        return (flat @ self.components.astype(dt)).reshape(x.shape)

    def _unproject(self, y):
        n = y.shape[0]
        dt = y.dtype
        flat = y.reshape(n, -1) @ self.components.T.astype(dt) + self.mean.astype(dt)
        return flat.reshape(y.shape)

    def _transform(self, x):
        return self._project(x)

    def _inverse(self, x):
        return self._unproject(x)

    def _divisor(self) -> np.ndarray | None:
        """What each component is divided by after the projection (none for plain PCA)."""
        return None

    def to_onnx(self, g, x):
        """Flatten, subtract the mean, MatMul by the components (then divide, for whitening)
        and Reshape back to (N, C, H, W): the float32 operations of :meth:`transform`, in
        its order."""
        flat = g.node("Flatten", [x], axis=1)
        y = g.node("MatMul", [g.node("Sub", [flat, g.const(self.mean)]),
                              g.const(self.components)])
        if self._divisor() is not None:
            y = g.node("Div", [y, g.const(self._divisor())])
        return g.node("Reshape", [y, g.const([-1, *self.input_shape], "int64")])


class Whiten(PCA):
    """PCA, then divide each component by ``sqrt(eigval + eps)`` (eps default 1e-5).

    The training data's covariance becomes ``diag(eigval / (eigval + eps))`` ~ identity.
    """

    name = "whiten"

    def __init__(self, eps: float | np.ndarray = WHITEN_EPS, **arrays):
        super().__init__(**arrays)
        eps = float(np.asarray(eps))
        if not (eps > 0 and np.isfinite(eps)):
            raise TrainError(f"whiten eps must be > 0; got {eps}",
                             hint="eps keeps zero-variance pixels finite; use e.g. 1e-5")
        self.eps = eps

    @classmethod
    def fit(cls, x_train, eps: float = WHITEN_EPS):
        p = super().fit(x_train)
        p.eps = float(eps)
        if not (p.eps > 0 and np.isfinite(p.eps)):
            raise TrainError(f"whiten eps must be > 0; got {eps}",
                             hint="eps keeps zero-variance pixels finite; use e.g. 1e-5")
        return p

    def _scalars(self):
        return {"eps": np.array(self.eps)}

    def _divisor(self):
        return np.sqrt(self.eigval + self.eps)

    def _transform(self, x):
        y = self._project(x)
        n = y.shape[0]
        return (y.reshape(n, -1) / self._divisor().astype(y.dtype)).reshape(y.shape)

    def _inverse(self, x):
        n = x.shape[0]
        y = (x.reshape(n, -1) * self._divisor().astype(x.dtype)).reshape(x.shape)
        return self._unproject(y)


PREPROCESSORS = Registry("preprocessing", error=TrainError)


def _register(cls: type[Preprocessor], *aliases: str, params: tuple[Param, ...] = ()) -> None:
    PREPROCESSORS.add(cls.name, cls, aliases=aliases, params=params, help=doc_line(cls))


_register(NoPreprocess, "", "identity")
_register(MeanImage, "mean", "center", "centre")
_register(ChannelMean, "per_channel_mean")
_register(ChannelMeanStd, "standardize", "normalize")
_register(PCA)
_register(Whiten, "zca", params=(Param("eps", WHITEN_EPS, "added to each eigenvalue before "
                                                          "the square root"),))


def _cls(name: Any) -> type[Preprocessor]:
    return PREPROCESSORS.get("none" if name is None else name)


def fit(name: str | None, x_train: np.ndarray, **kw: Any) -> Preprocessor:
    """Fit preprocessing ``name`` (see the module table) on ``x_train`` (N, C, H, W).

    Options are the entry's declared parameters (``whiten`` takes ``eps=``).
    """
    entry = PREPROCESSORS.lookup("none" if name is None else name)
    unknown = [k for k in kw if k not in entry.param_names]
    if unknown:
        takes = (f"takes only {', '.join(entry.param_names)}" if entry.params
                 else "takes no options")
        raise TrainError(f"preprocessing {entry.name!r} {takes}; got {', '.join(unknown)}")
    return entry.obj.fit(x_train, **kw)


def from_state(d: dict[str, Any]) -> Preprocessor:
    """Rebuild a fitted preprocessor from its :meth:`Preprocessor.state_dict`."""
    if not isinstance(d, dict) or "name" not in d:
        raise TrainError("preprocessing state must be a dict with a 'name'",
                         hint="pass what Preprocessor.state_dict() returned")
    name = d["name"]
    if isinstance(name, np.ndarray):
        name = str(name.item())
    cls = _cls(name)
    arrays = {k: v for k, v in d.items() if k != "name"}
    return cls(**arrays)
