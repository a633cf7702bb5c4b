"""What a trained conv layer learned: its filters as images, their sizes, and dead filters.

For a checkpoint from ``cnncalc train`` and one conv layer with weights ``W`` (K, C, FH, FW):

* filter ``k``'s norm is ``||W_k||_2`` (over its C·FH·FW weights) and its mean ``mean(W_k)``;
* filter ``k`` is *dead* when the ReLU right after the layer outputs 0 at every position of
  every sampled test image: ``max_{n,y,x} relu(conv(x_n))[k, y, x] = 0``. A dead filter's
  gradient is zero for all those images, so it no longer learns;
* how alike the filters are: the mean of ``|cos(W_i, W_j)|`` over pairs ``i < j``
  (1: all the same up to sign and scale; trained filters differ from each other);
* the pictures normalise each filter on its own to [0, 1]: ``(W_k - min W_k) / (max W_k -
  min W_k)``. A first layer on a 3-channel input is shown in colour (the channels as RGB); a
  deeper one shows one tile per input channel, or their mean with ``mean=True``.

The test images run through :meth:`cnncalc.Network.activations` (the engine's own forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import CnnCalcError, TrainError
from cnncalc.graph import INPUT_NAME

__all__ = ["FilterLab", "FilterRow", "ImageSample", "conv_layer", "filter_tiles", "in_colour",
           "run", "sample_or_note", "sample_test_images"]

#: At most this many tiles are drawn per picture; a larger layer is shown channel-averaged.
MAX_TILES = 1024


@dataclass
class FilterRow:
    index: int
    norm: float                   # ||W_k||_2
    mean: float                   # mean of W_k
    bias: float | None
    max_response: float | None    # largest ReLU output over the sample
    dead: bool | None             # ReLU output 0 over the whole sample (None: not measured)


@dataclass
class FilterLab:
    checkpoint: str
    layer: str
    shape: list[int]              # K, C, FH, FW
    colour: bool                  # tiles drawn in RGB (first layer on 3-channel input)
    mean_over_channels: bool      # one channel-averaged tile per filter
    rows: list[FilterRow]
    mean_abs_cosine: float        # mean |cos(W_i, W_j)|, i < j
    relu: str | None              # the ReLU after the layer that dead filters are read from
    data: str | None              # the test set sampled
    sample: int                   # test images used
    dead_share: float | None      # dead filters / K
    notes: list[str] = field(default_factory=list)
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def tiles(self) -> np.ndarray:
        """The normalised pictures, (K, T, FH, FW) or (K, 1, FH, FW, 3) in colour."""
        return filter_tiles(self.weights, colour=self.colour, mean=self.mean_over_channels)


@dataclass
class ImageSample:
    """The first ``n`` images of a checkpoint's test split: raw (in [0, 1]) and preprocessed."""

    data: str
    raw: np.ndarray
    x: np.ndarray
    y: np.ndarray
    classes: list[str]


def sample_test_images(model, n: int) -> ImageSample:
    """The first ``n`` test images of the data set the checkpoint was trained on, loaded as
    ``cnncalc evaluate`` loads them."""
    from cnncalc.train import trainer as T

    ds = T.load_data(model.settings, model.graph)
    T.check_compatible(model.graph, ds)
    raw, y = ds.x_test[:n], ds.y_test[:n]
    return ImageSample(model.settings.data, raw, model.prepare(raw), y, list(ds.classes))


def sample_or_note(model, n: int, notes: list[str], what: str) -> ImageSample | None:
    """:func:`sample_test_images`, or None (with ``"<what> not measured: <why>"`` added to
    ``notes``) when there are none: ``n`` is 0, the data cannot be loaded or has no test split."""
    if n <= 0:
        return None
    try:
        ts = sample_test_images(model, n)
    except CnnCalcError as err:
        notes.append(f"{what} not measured: {err.headline()}")
        return None
    if not len(ts.x):
        notes.append(f"{what} not measured: {ts.data} has no test images")
        return None
    return ts


def conv_layer(graph, name: str | None):
    """The conv node ``name`` (the first conv layer when None)."""
    convs = [n for n in graph.nodes if n.kind == "conv"]
    if not convs:
        raise TrainError("the network has no conv layer", hint="filters exist for conv layers")
    if name is None:
        return convs[0]
    for n in convs:
        if n.name == name:
            return n
    raise TrainError(f"no conv layer named {name!r}",
                     hint=f"conv layers: {', '.join(n.name for n in convs)}")


def _relu_after(graph, node):
    users = [n for n in graph.nodes if node.name in n.inputs]
    return users[0] if len(users) == 1 and users[0].kind == "relu" else None


def in_colour(node, channels: int) -> bool:
    """A conv layer reading the 3-channel input directly: its filters are shown as RGB."""
    return channels == 3 and list(node.inputs) == [INPUT_NAME]


def filter_tiles(weights: np.ndarray, *, colour: bool, mean: bool) -> np.ndarray:
    """Each filter normalised on its own to [0, 1]: ``(W_k - min) / (max - min)`` (0.5 where
    the filter is constant). Returns (K, 1, FH, FW, 3) in colour, (K, 1, FH, FW) with ``mean``,
    else (K, C, FH, FW)."""
    w = np.asarray(weights, dtype=np.float64)
    if mean:
        w = w.mean(axis=1, keepdims=True)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    t = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1.0), 0.5)
    if colour:
        return np.moveaxis(t, 1, -1)[:, None]
    return t


def _mean_abs_cosine(w: np.ndarray) -> float:
    flat = w.reshape(len(w), -1).astype(np.float64)
    if len(flat) < 2:
        return 1.0
    norms = np.linalg.norm(flat, axis=1)
    unit = flat / np.where(norms > 0, norms, 1.0)[:, None]
    cos = np.abs(unit @ unit.T)
    i, j = np.triu_indices(len(flat), k=1)
    return float(cos[i, j].mean())


def max_responses(net, x: np.ndarray, layer: str, batch_size: int = 250) -> np.ndarray:
    """``max_{n,y,x}`` of ``layer``'s output per channel over the images ``x``."""
    best = None
    for i in range(0, len(x), batch_size):
        out = net.activations(x[i:i + batch_size], [layer])[layer]
        m = out.max(axis=(0, 2, 3))
        best = m if best is None else np.maximum(best, m)
    return best


def run(checkpoint, layer: str | None = None, *, mean: bool = False, sample: int = 500,
        model=None) -> FilterLab:
    """The filters of ``layer`` (the first conv layer by default) of a checkpoint, with dead
    filters counted over the first ``sample`` test images (0: not measured)."""
    from cnncalc.train.evaluate import load_model

    model = model or load_model(checkpoint)
    node = conv_layer(model.graph, layer)
    w = np.array(model.net.params[node.param_key("weight")], dtype=np.float64)
    bias = model.net.params.get(node.param_key("bias"))
    k, c = w.shape[:2]
    notes = []
    colour = in_colour(node, c) and not mean
    if not colour and not mean and k * c > MAX_TILES:
        mean = True
        notes.append(f"{k} filters x {c} channels is more than {MAX_TILES} tiles: each filter "
                     "is shown as its channel mean")
    relu = _relu_after(model.graph, node)
    resp = None
    data = None
    used = 0
    if relu is None:
        notes.append(f"no ReLU directly after {node.name}: dead filters not measured")
    elif (ts := sample_or_note(model, sample, notes, "dead filters")) is not None:
        data, used = ts.data, len(ts.x)
        resp = max_responses(model.net, ts.x, relu.name)
    rows = [FilterRow(i, float(np.linalg.norm(w[i])), float(w[i].mean()),
                      None if bias is None else float(bias[i]),
                      None if resp is None else float(resp[i]),
                      None if resp is None else bool(resp[i] <= 0))
            for i in range(k)]
    dead = None if resp is None else float(np.mean(resp <= 0))
    return FilterLab(str(checkpoint), node.name, list(w.shape), colour, bool(mean), rows,
                     _mean_abs_cosine(w), relu.name if relu else None, data, used, dead, notes,
                     w)
