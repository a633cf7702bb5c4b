"""Measured (not claimed) symmetry properties of a spec's conv layers, run by the engine.

1. **Translation equivariance.** For each conv layer, phi = the network from the input up to that
   layer (eval mode). With J the layer's effective stride (receptive-field jump), shifting the
   input by ``k*J`` pixels (g) should shift phi's output by k positions (g . phi):
   ``||phi(g x) - g . phi(x)|| / ||phi(x)||`` on the output positions whose receptive field lies
   inside the image for both x and g x (away from the borders and zero padding) — about 1e-16
   in float64. Next to it, ``||phi(g x) - phi(x)||`` without re-aligning: large, since the
   features move (equivariant, not invariant).
2. **Approximate shift invariance** of the whole network (conv + pool + fc): the relative change
   of the output under shifts of s pixels, next to the change between two different images of
   the same data (the scale a "real" change has). A number, not a claim.
3. **Rotation.** The first conv layer's filters (stride 1, same padding, on a square input) are not
   equivariant to a 90 degree rotation R: ``||phi(R x) - R phi(x)|| / ||phi(x)||`` is of order 1.
   The lecture's remedy: a layer whose filters are the four rotations ``R^r w`` of each filter
   ``w``. Its output is rotation-equivariant up to a cyclic permutation of the four channel groups:
   the error is reported for each cyclic shift c of the groups; one of them is ~0.

Images: the synthetic data set (:func:`cnncalc.train.data.synthetic`) at the spec's input shape
when it is at least 8 x 8, else smooth random images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.labs import data_rng
from cnncalc.limits import Bound, check_network_memory

__all__ = ["EquivarianceLab", "RotationResult", "ShiftInvariance", "TranslationRow", "run"]

# layers after which the output is no longer a spatial map
_BREAKS = {"flatten", "fc", "maxout", "global_avgpool", "adaptive_avgpool"}


@dataclass
class TranslationRow:
    layer: str
    jump: list[int]                 # effective stride (h, w)
    shift: list[int]                # input shift in pixels (h, w)
    positions: int                  # output positions compared (per channel and image)
    equivariance_error: float | None  # ||phi(gx) - g.phi(x)|| / ||phi(x)|| on those positions
    change_unaligned: float | None  # ||phi(gx) - phi(x)|| / ||phi(x)|| on the same positions


@dataclass
class ShiftInvariance:
    shift: int                      # pixels, along both axes
    relative_change: float          # mean over images of ||phi(gx) - phi(x)|| / ||phi(x)||


@dataclass
class RotationResult:
    layer: str
    size: int                       # square input side used
    kernel: int
    filters: int                    # base filters (the rotated layer has 4x as many)
    ordinary_error: float           # ||phi(Rx) - R phi(x)|| / ||phi(x)||
    rotated_errors: list[float]     # for cyclic shifts c = 0..3 of the channel groups
    best_shift: int
    note: str = ""

    @property
    def rotated_error(self) -> float:
        return min(self.rotated_errors)


@dataclass
class EquivarianceLab:
    spec: str
    input: list[int]                # C, H, W
    images: int
    dtype: str
    translation: list[TranslationRow]
    invariance: list[ShiftInvariance]
    different_image_change: float | None
    output_layer: str
    rotation: RotationResult | None
    notes: list[str] = field(default_factory=list)


def _images(shape, n: int, seed: int) -> np.ndarray:
    c, h, w = shape
    if h >= 8 and w >= 8:
        from cnncalc.train.data import synthetic

        return synthetic(n, 1, seed=seed, shape=(c, h, w)).x_train.astype(np.float64)
    rng = data_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    for ax in (2, 3):  # smooth a little: a 3-tap box blur, circularly
        x = (np.roll(x, 1, ax) + x + np.roll(x, -1, ax)) / 3
    return x


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / den if den > 0 else float(np.linalg.norm(a - b))


def _valid(n_out: int, size: int, jump: int, start: float, shift: int, n_in: int) -> np.ndarray:
    p = np.arange(n_out)
    c = start + p * jump
    half = (size - 1) / 2
    return (c - half >= shift) & (c + half <= n_in - 1)


def _prefix(graph, upto: int):
    from cnncalc.graph import Graph

    return Graph(name=f"{graph.name}[:{graph.nodes[upto].name}]", input_shape=graph.input_shape,
                 nodes=graph.nodes[:upto + 1], convention=graph.convention)


def _translation(graph, net, x, k: int, dtype) -> list[TranslationRow]:
    from cnncalc.engine import Network

    rows = []
    state = net.state_dict()
    _, h_in, w_in = graph.input_shape
    for i, node in enumerate(graph.nodes):
        if node.kind in _BREAKS:
            break
        if node.kind != "conv":
            continue
        jh, jw = (int(s) for s in node.rf.stride)
        dh, dw = k * jh, k * jw
        pnet = Network(_prefix(graph, i), seed=0, dtype=dtype)
        pnet.load_state_dict(state, strict=False)
        gx = np.roll(x, (dh, dw), axis=(2, 3))
        y = pnet.forward(x, training=False)
        gy = pnet.forward(gx, training=False)
        vh = _valid(y.shape[2], node.rf.size[0], jh, node.rf.start[0], dh, h_in)
        vw = _valid(y.shape[3], node.rf.size[1], jw, node.rf.start[1], dw, w_in)
        npos = int(vh.sum() * vw.sum())
        if npos == 0:
            rows.append(TranslationRow(node.name, [jh, jw], [dh, dw], 0, None, None))
            continue
        shifted = np.roll(y, (k, k), axis=(2, 3))          # g . phi(x)
        sel = np.ix_(range(y.shape[0]), range(y.shape[1]), np.flatnonzero(vh), np.flatnonzero(vw))
        rows.append(TranslationRow(node.name, [jh, jw], [dh, dw], npos,
                                   _rel(gy[sel], shifted[sel]), _rel(gy[sel], y[sel])))
    return rows


def _rotation(graph, net, seed: int, dtype, size: int | None) -> RotationResult | None:
    from cnncalc.engine import Network

    conv = next((n for n in graph.nodes if n.kind == "conv"), None)
    if conv is None:
        return None
    c = conv.in_shape.c
    w = net.params[f"{conv.name}.weight"]
    note = ""
    kh, kw = w.shape[2:]
    if kh != kw or kh % 2 == 0 or conv.layer.groups != 1:
        rng = data_rng(seed + 1)
        w = rng.standard_normal((min(w.shape[0], 8), c, 3, 3))
        note = (f"{conv.name}'s filters are not square, odd and ungrouped; random 3x3 "
                "filters used instead")
    base = np.asarray(w[:8], np.float64)
    m, k = base.shape[0], base.shape[2]
    s = size or max(min(conv.in_shape.h, conv.in_shape.w, 32), k)

    def layer(filters):
        spec = {"name": "rotation", "input": {"width": s, "height": s, "channels": c},
                "layers": [{"conv": {"filters": filters, "size": k, "pad": k // 2,
                                     "bias": False}}]}
        return Network(spec, seed=0, dtype=dtype)

    ordinary = layer(m)
    ordinary.params["conv1.weight"][...] = base
    rotated = layer(4 * m)
    rotated.params["conv1.weight"][...] = np.concatenate(
        [np.rot90(base, r, axes=(2, 3)) for r in range(4)], axis=0)   # group r = R^r w

    x = _images((c, s, s), 4, seed)
    rx = np.rot90(x, 1, axes=(2, 3))
    y, ry = ordinary.forward(x, training=False), ordinary.forward(rx, training=False)
    err_ord = _rel(ry, np.rot90(y, 1, axes=(2, 3)))
    y4, ry4 = rotated.forward(x, training=False), rotated.forward(rx, training=False)
    r_y4 = np.rot90(y4, 1, axes=(2, 3)).reshape(len(x), 4, m, s, s)
    errs = [_rel(ry4, np.roll(r_y4, sh, axis=1).reshape(ry4.shape)) for sh in range(4)]
    return RotationResult(conv.name, int(s), int(k), int(m), err_ord, errs,
                          int(np.argmin(errs)), note)


#: test images: each goes through every conv prefix of the network and every shift
IMAGES = Bound("--images", 2, 1024, "each image goes through the network once per layer "
               "and per shift")
#: the largest shift of the invariance test: one pass of the whole network per pixel
MAX_SHIFT = Bound("--max-shift", 1, 256, "each pixel of shift is one more pass of the "
                  "network")


def run(spec, *, images: int = 4, shift: int = 1, max_shift: int = 4, seed: int = 0,
        dtype: str = "float64", rotation_size: int | None = None) -> EquivarianceLab:
    """Measure the three properties of ``spec`` (path, YAML text, dict or Graph)."""
    from cnncalc.engine import Network
    from cnncalc.graph import Graph
    from cnncalc.spec import load

    graph = spec if isinstance(spec, Graph) else load(spec)
    IMAGES.check(images)
    MAX_SHIFT.check(max_shift)
    if shift < 1:
        raise TrainError("shifts must be >= 1 pixel / position")
    check_network_memory(graph, f"lab equivariance on {graph.name}", batch=images,
                         dtype_bytes=np.dtype(dtype).itemsize, hint="use fewer --images")
    net = Network(graph, seed=seed, dtype=dtype)
    x = _images(graph.input_shape, images, seed)
    notes = []
    trans = _translation(graph, net, x, shift, dtype)
    if not trans:
        notes.append("no conv layer before the first flatten/fc: nothing to measure")
    # invariance of the whole network
    y = net.forward(x, training=False).reshape(len(x), -1)
    inv = []
    for s in range(1, max_shift + 1):
        gy = net.forward(np.roll(x, (s, s), axis=(2, 3)), training=False).reshape(len(x), -1)
        inv.append(ShiftInvariance(s, float(np.mean([_rel(gy[i], y[i]) for i in range(len(x))]))))
    other = np.roll(y, 1, axis=0)       # image i compared with image i-1
    diff = float(np.mean([_rel(other[i], y[i]) for i in range(len(x))]))
    rot = _rotation(graph, net, seed, dtype, rotation_size)
    if rot is None:
        notes.append("no conv layer: rotation not measured")
    return EquivarianceLab(graph.name, list(graph.input_shape), int(images), str(dtype), trans,
                           inv, diff, graph.output.name, rot, notes)
