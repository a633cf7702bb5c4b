"""One image through a trained network: every chosen layer's activation maps, one unit's
receptive field on the input, and the test images that excite that unit's map most.

* The maps are :meth:`cnncalc.Network.activations` of the preprocessed image (evaluation mode):
  layer ``L`` with output (C, H, W) gives C maps of H x W, labelled ``"L: HxWxC"``.
* A unit is ``(layer, channel, row, col)``. Its receptive field comes from the analysis
  (``cnncalc analyze``'s ``rf`` of the layer: size, stride, start, where ``start`` is the
  centre of unit (0, 0) in input pixel coordinates). Per axis, the unit at position ``p`` sees
  the input pixels ``centre ± (size - 1) / 2`` with ``centre = start + p · stride``; the box is
  ``[top, left, bottom, right]``, inclusive, and may reach past the image (into the padding).
* Top-k (after Zeiler & Fergus): the first ``sample`` test images are ranked by the largest
  value of the unit's channel, ``max_{y,x} a[c, y, x]``; each keeps the position where that
  maximum is and the box of the unit there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncalc.errors import DataError, TrainError

__all__ = ["ActivationMapsLab", "LayerMaps", "TopImage", "UnitField", "field_box", "read_image",
           "run"]

_INDEXED = re.compile(r"^(?P<path>.+)\[(?P<index>\d+)\]$")


@dataclass
class LayerMaps:
    layer: str
    kind: str
    shape: list[int]              # C, H, W
    label: str                    # "conv1: 28x28x6" (W x H x C, as cnncalc analyze writes it)
    min: float
    max: float
    mean: float
    strongest: int                # the channel with the largest value
    maps: np.ndarray | None = field(default=None, repr=False)   # (C, H, W)


@dataclass
class UnitField:
    layer: str
    channel: int
    row: int
    col: int
    value: float                  # the unit's activation on the image
    size: list[int]               # receptive field, (height, width), from the analysis
    stride: list[int]
    start: list[float]            # centre of unit (0, 0) in input pixels (y, x)
    centre: list[float]           # centre of this unit's field (y, x)
    box: list[float]              # [top, left, bottom, right], inclusive input pixels
    exceeds_input: bool           # the box reaches past the image (into the padding)


@dataclass
class TopImage:
    index: int                    # in the test split
    label: str
    value: float                  # max over positions of the unit's channel
    row: int
    col: int
    box: list[float]
    image: np.ndarray | None = field(default=None, repr=False)  # raw (C, H, W) in [0, 1]


@dataclass
class ActivationMapsLab:
    checkpoint: str
    image: str
    input_shape: list[int]        # C, H, W
    predicted: str
    probability: float
    layers: list[LayerMaps]
    unit: UnitField | None
    top: list[TopImage]
    data: str | None
    sample: int
    notes: list[str] = field(default_factory=list)
    input_image: np.ndarray | None = field(default=None, repr=False)  # raw (C, H, W)


def read_image(spec: str, input_shape) -> tuple[np.ndarray, str]:
    """One raw image (C, H, W) from ``FILE`` (holding one image) or ``FILE[INDEX]`` (any
    format ``cnncalc predict`` reads)."""
    from cnncalc.train.evaluate import load_inputs

    path, index = spec, None
    m = _INDEXED.match(spec)
    if m and not Path(spec).exists():
        path, index = m["path"], int(m["index"])
    x, names = load_inputs([path], tuple(input_shape))
    if index is None:
        if len(x) != 1:
            raise DataError(f"{path} holds {len(x)} images; choose one",
                            hint=f"--image '{path}[0]' (0 .. {len(x) - 1})")
        return x[0], names[0]
    if index >= len(x):
        raise DataError(f"{path} holds {len(x)} images; index {index} is out of range",
                        hint=f"use 0 .. {len(x) - 1}")
    return x[index], f"{path}[{index}]"


def field_box(rf: dict, row: int, col: int, input_hw) -> tuple[list[float], list[float], bool]:
    """``(centre, box, exceeds)`` of the unit at (row, col) for an analysis ``rf`` dict."""
    (sh, sw), (jh, jw), (oh, ow) = rf["size"], rf["stride"], rf["start"]
    cy, cx = oh + row * jh, ow + col * jw
    hy, hx = (sh - 1) / 2, (sw - 1) / 2
    box = [cy - hy, cx - hx, cy + hy, cx + hx]
    h, w = input_hw
    exceeds = box[0] < 0 or box[1] < 0 or box[2] > h - 1 or box[3] > w - 1
    return [float(cy), float(cx)], [float(b) for b in box], bool(exceeds)


def _spatial_layers(graph) -> list[str]:
    return [n.name for n in graph.nodes if n.out_shape.h * n.out_shape.w > 1]


def _parse_unit(text: str, maps: dict[str, np.ndarray], default_layer: str):
    """``LAYER[:CHANNEL[@ROW,COL]]``; channel defaults to the strongest, the position to where
    the channel peaks."""
    layer, _, rest = text.partition(":")
    layer = layer or default_layer
    if layer not in maps:
        raise TrainError(f"--unit names layer {layer!r}, which is not among the layers shown",
                         hint=f"one of: {', '.join(maps)} (or add it to --layers)")
    a = maps[layer]
    chan_text, _, pos_text = rest.partition("@")
    c, h, w = a.shape
    try:
        channel = int(chan_text) if chan_text else int(np.argmax(a.max(axis=(1, 2))))
        row, col = (int(v) for v in pos_text.split(",")) if pos_text else (0, 0)
    except ValueError:
        raise TrainError(f"--unit takes LAYER[:CHANNEL[@ROW,COL]]; got {text!r}",
                         hint="e.g. --unit conv2:3@4,5") from None
    if not (0 <= channel < c and 0 <= row < h and 0 <= col < w):
        raise TrainError(f"--unit {text!r} is outside {layer}'s output {w}x{h}x{c}",
                         hint=f"channel 0..{c - 1}, row 0..{h - 1}, col 0..{w - 1}")
    if not pos_text:
        row, col = (int(v) for v in np.unravel_index(np.argmax(a[channel]), a.shape[1:]))
    return layer, channel, row, col


def run(checkpoint, image: str, layers: list[str] | None = None, *, unit: str | None = None,
        top_k: int = 6, sample: int = 1000, model=None) -> ActivationMapsLab:
    """Activation maps of ``image`` at ``layers`` (default: every layer with a spatial output),
    the receptive field of ``unit`` (default: the strongest unit of the last such layer) and the
    ``top_k`` of the first ``sample`` test images that excite the unit's channel most."""
    from cnncalc.labs.filters import sample_or_note
    from cnncalc.train.evaluate import load_model, predict

    model = model or load_model(checkpoint)
    graph = model.graph
    names = list(layers) if layers else _spatial_layers(graph)
    if not names:
        raise TrainError("the network has no layer with a spatial output to show",
                         hint="give --layers")
    raw, label = read_image(image, graph.input_shape)
    top, prob = predict(model, raw[None])
    maps = {k: v[0] for k, v in model.net.activations(model.prepare(raw[None]), names).items()}
    rows = {r["name"]: r for r in graph.analyze()["layers"]}
    shown = []
    for name, a in maps.items():
        o = rows[name]["output"]
        shown.append(LayerMaps(name, rows[name]["type"], list(a.shape),
                               f"{name}: {o['width']}x{o['height']}x{o['depth']}",
                               float(a.min()) + 0.0, float(a.max()) + 0.0, float(a.mean()) + 0.0,
                               int(np.argmax(a.reshape(len(a), -1).max(axis=1))), a))
    notes: list[str] = []
    spatial = [n for n in names if maps[n].shape[1] * maps[n].shape[2] > 1]
    field_info = None
    best: list[TopImage] = []
    data, used = None, 0
    if unit is not None or spatial:
        lname, ch, r, c = _parse_unit(unit or "", maps, (spatial or names)[-1])
        rf = rows[lname]["rf"]
        hw = tuple(graph.input_shape)[1:]
        centre, box, exceeds = field_box(rf, r, c, hw)
        field_info = UnitField(lname, ch, r, c, float(maps[lname][ch, r, c]), list(rf["size"]),
                               list(rf["stride"]), list(rf["start"]), centre, box, exceeds)
        ts = sample_or_note(model, sample if top_k > 0 else 0, notes, f"top-{top_k} images")
        if ts is not None:
            data, used = ts.data, len(ts.x)
            best = _top_images(model.net, ts, lname, ch, top_k, rf, hw)
    return ActivationMapsLab(str(checkpoint), label, list(raw.shape), model.classes[top[0, 0]]
                             if top[0, 0] < len(model.classes) else str(top[0, 0]),
                             float(prob[0, 0]), shown, field_info, best, data, used, notes, raw)


def _top_images(net, ts, layer: str, channel: int, k: int, rf: dict, hw,
                batch_size: int = 250) -> list[TopImage]:
    values, where = [], []
    for i in range(0, len(ts.x), batch_size):
        a = net.activations(ts.x[i:i + batch_size], [layer])[layer][:, channel]
        flat = a.reshape(len(a), -1)
        pos = flat.argmax(axis=1)
        values.append(flat[np.arange(len(a)), pos])
        where.append(np.stack(np.unravel_index(pos, a.shape[1:]), axis=1))
    values = np.concatenate(values)
    where = np.concatenate(where)
    order = np.argsort(-values, kind="stable")[:k]
    out = []
    for i in order:
        r, c = (int(v) for v in where[i])
        label = int(ts.y[i])
        out.append(TopImage(int(i), ts.classes[label] if label < len(ts.classes) else str(label),
                            float(values[i]), r, c, field_box(rf, r, c, hw)[1], ts.raw[i]))
    return out
