"""Evaluation and prediction: accuracy, loss and confusion matrix; loading a trained checkpoint;
reading images to classify (``.npy``/``.npz``, IDX, PNG/JPEG when Pillow is present).

Evaluation always runs the network in inference mode (``training=False``): dropout is off and
batch normalisation uses its running statistics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncalc.errors import DataError, TrainError
from cnncalc.limits import check_network_memory

__all__ = ["EvalResult", "LoadedModel", "evaluate", "load_inputs", "load_model", "log_softmax",
           "predict"]


@dataclass
class EvalResult:
    """Accuracy and mean cross-entropy over ``n`` examples; ``confusion[true, predicted]``."""

    n: int
    loss: float
    accuracy: float
    confusion: np.ndarray | None = None
    per_class_accuracy: list[float | None] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "loss": self.loss, "accuracy": self.accuracy,
                "classes": list(self.classes),
                "per_class_accuracy": list(self.per_class_accuracy),
                "confusion": None if self.confusion is None else self.confusion.tolist()}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def evaluate(net, x: np.ndarray, y: np.ndarray, batch_size: int = 1000, *,
             confusion: bool = True, classes: list[str] | None = None) -> EvalResult:
    """Accuracy, mean softmax cross-entropy and (optionally) the confusion matrix of ``net`` on
    preprocessed images ``x`` (N, C, H, W) with labels ``y``.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        raise DataError("cannot evaluate on an empty set")
    if len(x) != n:
        raise DataError(f"{len(x)} images but {n} labels")
    loss_sum = 0.0
    preds = np.empty(n, np.int64)
    k = None
    for i in range(0, n, batch_size):
        logits = net.forward(x[i:i + batch_size], training=False)
        logits = logits.reshape(logits.shape[0], -1)
        k = logits.shape[1]
        yy = y[i:i + batch_size]
        if yy.size and (yy.min() < 0 or yy.max() >= k):
            raise DataError(f"labels must lie in [0, {k}); got values up to {int(yy.max())}",
                            hint="the data has more classes than the network's last layer")
        ls = log_softmax(logits)
        loss_sum += float(-ls[np.arange(len(yy)), yy].sum())
        preds[i:i + len(yy)] = logits.argmax(axis=1)
    acc = float(np.count_nonzero(preds == y)) / n
    res = EvalResult(n=n, loss=loss_sum / n, accuracy=acc,
                     classes=list(classes) if classes else [str(c) for c in range(k or 0)])
    if confusion:
        kk = max(int(k or 0), len(res.classes))
        cm = np.bincount(y.astype(np.int64) * kk + preds, minlength=kk * kk).reshape(kk, kk)
        res.confusion = cm
        totals = cm.sum(axis=1)
        res.per_class_accuracy = [float(cm[c, c] / totals[c]) if totals[c] else None
                                  for c in range(kk)]
        if len(res.classes) < kk:
            res.classes += [str(c) for c in range(len(res.classes), kk)]
    return res


# ------------------------------------------------------------------------------------------------
# trained models


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, with its preprocessing and metadata."""

    net: Any
    graph: Any
    preprocessor: Any
    checkpoint: Any
    settings: Any
    classes: list[str]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Apply the training preprocessing to raw images in [0, 1]."""
        x = self.preprocessor.transform(x) if self.preprocessor is not None else x
        return np.ascontiguousarray(x, dtype=self.net.dtype)


def load_model(path: str | os.PathLike, tier=None) -> LoadedModel:
    """Rebuild the network, preprocessing and settings stored in a training checkpoint
    (``tier``: run the network on that tier, :meth:`cnncalc.Network.use_tier`).

    Raises
    ------
    DataError
        The file is missing, damaged or not a cnncalc checkpoint.
    """
    from cnncalc.engine.network import Network
    from cnncalc.spec import load
    from cnncalc.train import preprocess
    from cnncalc.train.checkpoint import load_checkpoint
    from cnncalc.train.settings import resolve

    ckpt = load_checkpoint(path)
    if not ckpt.spec_text.strip():
        raise DataError(f"checkpoint {path} holds no spec", hint="it was not written by "
                        "`cnncalc train`; rebuild the network from its spec")
    graph = load(ckpt.spec_text)
    extra = ckpt.extra or {}
    settings = resolve(("checkpoint", extra.get("settings") or {}))
    check_network_memory(graph, f"checkpoint {path}'s network", batch=settings.eval_batch_size,
                         dtype_bytes=np.dtype(settings.dtype).itemsize,
                         hint="lower eval_batch_size")
    net = Network(graph, init=settings.init, seed=settings.seed,
                  dtype=settings.dtype, parallel=settings.parallel)
    state = dict(ckpt.params)
    state.update(ckpt.buffers or {})
    net.load_state_dict(state)
    if tier is not None:
        net.use_tier(tier)
    prep = preprocess.from_state(ckpt.preprocess_state) if ckpt.preprocess_state else None
    classes = [str(c) for c in extra.get("classes") or []]
    if not classes:
        classes = [str(i) for i in range(int(graph.output_shape.c))]
    return LoadedModel(net, graph, prep, ckpt, settings, classes)


# ------------------------------------------------------------------------------------------------
# inputs for predict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _scale(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    raise DataError(f"{path}: images must be numeric; got dtype {a.dtype}")


def _arrange(a: np.ndarray, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """Bring ``a`` to (N, C, H, W) for an input of ``shape`` = (C, H, W)."""
    c, h, w = shape
    if a.ndim == 2 and c == 1 and a.shape == (h, w):
        return a[None, None]
    if a.ndim == 3:
        if a.shape == (c, h, w):
            return a[None]
        if a.shape == (h, w, c):
            return a.transpose(2, 0, 1)[None]
        if c == 1 and a.shape[1:] == (h, w):
            return a[:, None]
    if a.ndim == 4:
        if a.shape[1:] == (c, h, w):
            return a
        if a.shape[1:] == (h, w, c):
            return a.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: array of shape {a.shape} does not fit the network's input "
                    f"{h}x{w}x{c} (HxWxC)",
                    hint=f"give (N, {c}, {h}, {w}), (N, {h}, {w}, {c}), one image "
                         f"({c}, {h}, {w}) or ({h}, {w})")


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix} images needs Pillow",
                        hint="pip install pillow, or save the images as .npy") from None
    c, h, w = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            a = np.asarray(im)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for damaged files
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    if a.shape[:2] != (h, w):
        raise DataError(f"{path}: image is {a.shape[1]}x{a.shape[0]} pixels; the network takes "
                        f"{w}x{h}", hint="resize it first")
    if c not in (1, 3):
        raise DataError(f"{path}: the network takes {c} channels; images give 1 or 3")
    return a


def load_inputs(paths: list[str | os.PathLike], input_shape: tuple[int, int, int]
                ) -> tuple[np.ndarray, list[str]]:
    """Read images to classify from ``.npy``, ``.npz`` (array ``x``, ``x_test`` or the first
    one), IDX (``*-ubyte``, ``*.idx*``, gzipped or not) and, with Pillow, PNG/JPEG files.

    Returns ``(x, names)``: ``x`` is (N, C, H, W) float32 with 8-bit data scaled to [0, 1];
    ``names`` labels each image (``file`` or ``file[i]``).
    """
    from cnncalc.train.data import check_finite, read_idx

    shape = tuple(int(s) for s in input_shape)
    xs: list[np.ndarray] = []
    names: list[str] = []
    if not paths:
        raise DataError("no input files given", hint="cnncalc predict CKPT image.npy ...")
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"input file {path} does not exist")
        suffix = path.suffix.lower()
        low = path.name.lower()
        if suffix in IMAGE_SUFFIXES:
            a = _read_image(path, shape)
        elif suffix == ".npy":
            try:
                a = np.load(path, allow_pickle=False)
            except Exception as e:  # noqa: BLE001 - numpy raises many kinds
                raise DataError(f"cannot read {path} as .npy: {type(e).__name__}: {e}") from None
        elif suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    key = next((k for k in ("x", "x_test", "images") if k in z.files),
                               z.files[0] if z.files else None)
                    if key is None:
                        raise DataError(f"{path} holds no arrays")
                    a = z[key]
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001 - numpy raises many kinds
                raise DataError(f"cannot read {path} as .npz: {type(e).__name__}: {e}") from None
        elif "idx" in low or "ubyte" in low:
            a = read_idx(path)
        else:
            raise DataError(f"{path}: unknown input format {suffix or '(no suffix)'}",
                            hint="give .npy, .npz, IDX (-ubyte) files, or PNG/JPEG with Pillow")
        a = _arrange(_scale(np.asarray(a), path), shape, path)
        if len(a) == 0:
            raise DataError(f"{path} holds no images (an array of shape {a.shape})",
                            hint="give at least one image")
        check_finite(a, str(path))
        xs.append(a)
        if len(a) == 1:
            names.append(str(path))
        else:
            names += [f"{path}[{i}]" for i in range(len(a))]
    return np.concatenate(xs, axis=0), names


def predict(model: LoadedModel, x: np.ndarray, top_k: int = 1, batch_size: int = 256
            ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities for raw images ``x`` (N, C, H, W) in [0, 1].

    Returns ``(top_classes, top_probs)``, each (N, top_k), most likely first.
    """
    if top_k < 1:
        raise TrainError(f"top_k must be >= 1; got {top_k}")
    xp = model.prepare(x)
    logits = model.net.predict(xp, batch_size=batch_size)
    logits = logits.reshape(logits.shape[0], -1)
    prob = np.exp(log_softmax(logits))
    k = min(top_k, prob.shape[1])
    top = np.argsort(-prob, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(prob, top, axis=1)
