"""`cnncalc lab ...`: the classroom labs (library code in :mod:`cnncalc.labs`).

Every command computes with one library call, then prints a rich table (default), or JSON with
``--format json``; ``--plot FILE.png`` draws a picture with matplotlib where one helps.
"""
from __future__ import annotations

import dataclasses
import math
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from cnncalc.cli.common import TableOrJson, console, handle_errors, print_json
from cnncalc.cli.render import user_text as _u
from cnncalc.labs.optimizers import FUNCTIONS

#: the ``lab`` command group; cnncalc.cli.app adds it to the root application
commands = typer.Typer(
    name="lab",
    help="Classroom labs: init statistics, optimizers, schedules, activations, equivariance, "
         "batch-norm folding, preprocessing, a trained network's filters and activation maps.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Init(str, Enum):
    small = "0.01"
    one = "1.0"
    xavier = "xavier"
    he = "he"
    zeros = "zeros"


class Nonlin(str, Enum):
    tanh = "tanh"
    relu = "relu"


#: the 2-D test functions of the optimizer lab, from its table
Function = Enum("Function", {name: name for name in FUNCTIONS}, type=str)


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


FormatOpt = typer.Option(TableOrJson.table, "--format", "-f", help="table or json.")
PlotOpt = typer.Option(None, "--plot", help="Also draw a picture to this file (needs matplotlib: "
                                            "pip install cnncalc[plot]).", dir_okay=False)
SeedOpt = typer.Option(0, "--seed", help="Random seed (weights and data).")


# ------------------------------------------------------------------------------ helpers
def _clean(obj):
    """JSON-safe: +-inf as the strings "inf"/"-inf", NaN as null, tuples and arrays as lists."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        obj = obj.tolist()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _emit_json(result, drop: tuple[str, ...] = (), *,
               drop_in: tuple[str, tuple[str, ...]] | None = None, **extra) -> None:
    """``result`` as JSON without the keys ``drop``; ``drop_in=(list_key, keys)`` also drops
    ``keys`` from every record of ``result[list_key]``; ``extra`` adds keys."""
    d = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
    for k in drop:
        d.pop(k, None)
    if drop_in is not None:
        list_key, keys = drop_in
        for record in d[list_key]:
            for k in keys:
                record.pop(k, None)
    print_json(_clean({**d, **extra}))


def _g(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{v:.{digits}f}" else f"{v}"
    return str(v)


def _without_arrays(obj):
    """``obj`` without the numpy arrays it holds (pictures the JSON leaves out by default)."""
    if isinstance(obj, dict):
        return {k: _without_arrays(v) for k, v in obj.items() if not hasattr(v, "shape")}
    if isinstance(obj, list):
        return [_without_arrays(v) for v in obj]
    return obj


def _emit_json_arrays(result, arrays: bool) -> None:
    """``result`` as JSON, with its numpy arrays as nested lists when ``arrays``, else without."""
    d = dataclasses.asdict(result)
    print_json(_clean(d if arrays else _without_arrays(d)))


def _fixed(v, digits: int = 6) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _plot(fn, result, path: Path | None, **kw) -> None:
    if path is None:
        return
    from cnncalc.labs import plotting

    out = getattr(plotting, fn)(result, path, **kw)
    console(stderr=True).print(f"plot written to {_u(out)}")


def _notes(out, notes) -> None:
    for n in notes:
        out.print(f"note: {_u(n)}")


# ------------------------------------------------------------------------------ init-stats
@commands.command("init-stats")
@handle_errors
def init_stats(
    init: Init = typer.Option(Init.xavier, "--init", "-i",
                              help="0.01 / 1.0 (normal with that std), xavier, he, zeros."),
    nonlinearity: Nonlin = typer.Option(Nonlin.tanh, "--nonlinearity", "-a"),
    n: int = typer.Option(1000, "--n", min=1, help="Number of unit-Gaussian inputs."),
    width: int = typer.Option(500, "--width", min=1, help="Input dimension and units per layer."),
    depth: int = typer.Option(10, "--depth", min=1, help="Number of fully connected layers."),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
    histograms: bool = typer.Option(False, "--histograms", help="Include histograms in JSON."),
):
    """The lecture's init experiment: per-layer activation mean/std and gradient scale."""
    from cnncalc.labs import init_stats as lab

    r = lab.run(init.value, nonlinearity.value, n=n, width=width, depth=depth, seed=seed)
    _plot("init_stats", r, plot)
    if fmt is TableOrJson.json:
        _emit_json(r, drop_in=None if histograms else ("layers", ("hist_counts", "hist_edges")))
        return
    out = console()
    t = Table(title=f"init {r.init} ({r.init_spec}), {r.nonlinearity}: {r.depth} fc layers x "
                    f"{r.width} units, {r.n} unit-Gaussian inputs")
    for c in ("layer", "mean", "std", "saturated" if r.nonlinearity == "tanh" else "zero",
              "std dL/dW", "std dL/dh", "unit grad spread"):
        t.add_column(c, justify="right")
    for L in r.layers:
        t.add_row("input" if L.layer == 0 else f"hidden {L.layer}", _fixed(L.mean),
                  _fixed(L.std), "-" if L.layer == 0 else f"{L.saturated:.1%}",
                  _g(L.grad_w_std), _g(L.grad_h_std), _g(L.unit_grad_spread))
    out.print(t)
    for L in r.layers:
        out.print(f"{'input layer' if L.layer == 0 else f'hidden layer {L.layer}'} had mean "
                  f"{L.mean:.6f} and std {L.std:.6f}")
    _notes(out, r.notes)


# ------------------------------------------------------------------------------ optimizers
def _parse_lrs(items: list[str] | None) -> dict:
    from cnncalc.errors import TrainError

    lrs = {}
    for item in items or []:
        name, sep, val = item.partition("=")
        try:
            lrs[name.strip().lower()] = float(val)
        except ValueError:
            raise TrainError(f"--lr takes NAME=VALUE; got {item!r}",
                             hint="e.g. --lr adam=0.1 --lr sgd=0.01") from None
        if not sep:
            raise TrainError(f"--lr takes NAME=VALUE; got {item!r}", hint="e.g. --lr adam=0.1")
    return lrs


@commands.command("optimizers")
@handle_errors
def optimizers(
    function: Function = typer.Option(Function.ravine, "--function", "-F"),
    kappa: float = typer.Option(50.0, "--kappa", "--condition", min=1.0,
                                help="Condition number of the ravine."),
    noise: float = typer.Option(0.0, "--noise", min=0.0,
                                help="Std of Gaussian noise added to each gradient."),
    steps: int = typer.Option(None, "--steps", min=1, help="Step budget (default per function)."),
    tol: float = typer.Option(None, "--tol", help="Tolerance on f - f* (default per function)."),
    lr: list[str] = typer.Option(None, "--lr", help="Override a rate: NAME=VALUE (repeatable)."),
    only: list[str] = typer.Option(None, "--optimizer", "-o", help="Run only these (repeatable)."),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
    paths: bool = typer.Option(False, "--paths", help="Include the trajectories in JSON."),
):
    """Trajectories of sgd, momentum, nesterov, adagrad, rmsprop, adam on a 2-D function."""
    from cnncalc.labs import optimizers as lab

    r = lab.run(function.value, only or lab.OPTIMIZERS, kappa=kappa, noise=noise, steps=steps,
                tol=tol, lrs=_parse_lrs(lr), seed=seed)
    _plot("optimizers", r, plot)
    if fmt is TableOrJson.json:
        _emit_json(r, drop_in=None if paths else ("runs", ("path",)), best=r.best())
        return
    out = console()
    title = f"{r.function}" + (f", condition number {r.kappa:g}" if r.kappa else "") + \
        (f", gradient noise {r.noise:g}" if r.noise else "") + \
        f": start {tuple(r.start)}, tol {r.tol:g} on f - f*, {r.steps} steps"
    t = Table(title=title)
    for c in ("optimizer", "lr", "steps to tol", "final f - f*", "final point"):
        t.add_column(c, justify="right" if c != "optimizer" else "left")
    for run in r.runs:
        steps_txt = "diverged" if run.diverged else (
            str(run.steps_to_tol) if run.steps_to_tol is not None else "not reached")
        t.add_row(run.optimizer, f"{run.lr:g}", steps_txt, _g(run.final_loss),
                  f"({run.final_point[0]:.4g}, {run.final_point[1]:.4g})")
    out.print(t)
    if r.best():
        out.print(f"fastest to tol: {r.best()}")


# ------------------------------------------------------------------------------ schedules
@commands.command("schedules")
@handle_errors
def schedules(
    lr: float = typer.Option(0.1, "--lr", min=0.0, help="Initial learning rate alpha0."),
    steps: int = typer.Option(100, "--steps", "-T", min=2, help="T, the number of steps."),
    warmup: int = typer.Option(None, "--warmup", min=0, help="Warm-up steps (default T // 10)."),
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
):
    """The learning rate of every schedule over T steps, with and without warm-up."""
    from cnncalc.labs import schedules as lab

    r = lab.run(lr, steps, warmup)
    _plot("schedules", r, plot)
    if fmt is TableOrJson.json:
        _emit_json(r)
        return
    out = console()
    t = Table(title=f"learning rate at step t (alpha0 = {r.lr:g}, T = {r.steps}, "
                    f"warm-up {r.warmup})")
    t.add_column("schedule")
    for p in r.probes:
        t.add_column(f"t={p}", justify="right")
    for c in r.curves:
        t.add_row(c.label, *[f"{c.lr[p]:.4g}" for p in r.probes])
    out.print(t)


# ------------------------------------------------------------------------------ activations
@commands.command("activations")
@handle_errors
def activations(
    lo: float = typer.Option(-5.0, "--from", help="Plot range start."),
    hi: float = typer.Option(5.0, "--to", help="Plot range end."),
    init: str = typer.Option(None, "--init", help="Add a dead-ReLU row with this init "
                                                  "(e.g. normal:0.01, he)."),
    bias: float = typer.Option(0.0, "--bias", help="Bias of that row's units."),
    positive: bool = typer.Option(False, "--positive-inputs",
                                  help="That row's inputs are in [0, 1] (not centred)."),
    no_cost: bool = typer.Option(False, "--no-cost", help="Skip the timing (relative cost)."),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
    curves: bool = typer.Option(False, "--curves", help="Include the sampled curves in JSON."),
):
    """Each activation and its derivative; measured properties; dead ReLUs."""
    from cnncalc.labs import activations as lab

    extra = [(init, bias, "positive" if positive else "centred")] if init else None
    r = lab.run(lo, hi, measure_cost=not no_cost, extra_dead=extra, seed=seed)
    _plot("activations", r, plot)
    if fmt is TableOrJson.json:
        _emit_json(r, () if curves else ("x", "curves"))
        return
    out = console()
    t = Table(title="activation functions (properties measured on the kernels)")
    for c in ("activation", "output range", "mean out for N(0,1)", "zero-centred", "saturates",
              "gradient dies", "relative cost"):
        t.add_column(c, justify="left" if c in ("activation",) else "right")
    for p in r.properties:
        rng = f"({_g(p.output_range[0])}, {_g(p.output_range[1])})"
        t.add_row(p.name + (f" ({p.note})" if p.note else ""), rng, f"{p.mean_output:.3f}",
                  p.zero_centred, p.saturates, p.gradient_dies,
                  "-" if p.relative_cost is None else f"{p.relative_cost:.1f}x")
    out.print(t)
    d = Table(title="dead ReLUs: one fc layer of 500 units + ReLU, 1000 inputs of 500 dims")
    for c in ("scenario", "init", "bias", "inputs", "dead units", "zero outputs"):
        d.add_column(c, justify="left" if c in ("scenario", "init", "inputs") else "right")
    for row in r.dead:
        d.add_row(row.scenario, row.init, f"{row.bias:g}", row.inputs, f"{row.dead_fraction:.1%}",
                  f"{row.zero_fraction:.1%}")
    out.print(d)
    out.print("dead = zero output (and zero gradient) for every input of the batch")


# ------------------------------------------------------------------------------ equivariance
SpecArg = typer.Argument(..., help="YAML architecture spec.", exists=True, dir_okay=False,
                         readable=True, show_default=False)


@commands.command("equivariance")
@handle_errors
def equivariance(
    spec: Path = SpecArg,
    images: int = typer.Option(4, "--images", min=2, help="Number of test images."),
    shift: int = typer.Option(1, "--shift", min=1,
                              help="Translation in output positions (x the layer's stride)."),
    max_shift: int = typer.Option(4, "--max-shift", min=1,
                                  help="Largest pixel shift for the invariance test."),
    dtype: DType = typer.Option(DType.float64, "--dtype"),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
):
    """Translation equivariance of conv layers, shift invariance, 90° rotation."""
    from cnncalc.labs import equivariance as lab

    r = lab.run(spec, images=images, shift=shift, max_shift=max_shift, seed=seed,
                dtype=dtype.value)
    if fmt is TableOrJson.json:
        d = dataclasses.asdict(r)
        if r.rotation is not None:
            d["rotation"]["rotated_error"] = r.rotation.rotated_error
        print_json(_clean(d))
        return
    out = console()
    t = Table(title=f"translation equivariance of {_u(r.spec)}'s conv layers "
                    f"(network up to the layer, eval mode, {r.images} images, {r.dtype})")
    for c in ("layer", "stride (jump)", "input shift", "positions", "||phi(gx) - g.phi(x)||",
              "||phi(gx) - phi(x)||"):
        t.add_column(c, justify="left" if c == "layer" else "right")
    for row in r.translation:
        t.add_row(_u(row.layer), f"{row.jump[0]}x{row.jump[1]}",
                  f"{row.shift[0]},{row.shift[1]} px",
                  str(row.positions), _g(row.equivariance_error), _g(row.change_unaligned))
    out.print(t)
    out.print("(relative to ||phi(x)||, on output positions whose receptive field stays inside "
              "the image)")
    inv = Table(title=f"shift invariance of the whole network (output of {_u(r.output_layer)})")
    inv.add_column("shift (px)", justify="right")
    inv.add_column("||phi(gx) - phi(x)|| / ||phi(x)||", justify="right")
    for s in r.invariance:
        inv.add_row(str(s.shift), f"{s.relative_change:.4f}")
    inv.add_row("other image", f"{r.different_image_change:.4f}")
    out.print(inv)
    rot = r.rotation
    if rot is not None:
        rt = Table(title=f"90° rotation: {_u(rot.layer)}'s {rot.filters} filters ({rot.kernel}x"
                         f"{rot.kernel}, stride 1, same padding) on {rot.size}x{rot.size} "
                         "inputs")
        rt.add_column("layer", justify="left")
        rt.add_column("||phi(Rx) - P R phi(x)|| / ||phi(x)||", justify="right")
        rt.add_row("ordinary conv (P = identity)", _g(rot.ordinary_error))
        for c, e in enumerate(rot.rotated_errors):
            rt.add_row(f"4 rotations of each filter, channel groups shifted by {c}", _g(e))
        out.print(rt)
        if rot.note:
            out.print(f"note: {_u(rot.note)}")
    _notes(out, r.notes)


# ------------------------------------------------------------------------------ bn-fold
@commands.command("bn-fold")
@handle_errors
def bn_fold(
    source: Path = typer.Argument(..., help="YAML spec, or a .npz checkpoint from `cnncalc "
                                            "train`.", exists=True, dir_okay=False,
                                  readable=True, show_default=False),
    images: int = typer.Option(8, "--images", min=1, help="Number of test images."),
    dtype: DType = typer.Option(DType.float64, "--dtype"),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
):
    """Fold batch norm into the conv/fc before it; check outputs agree; count savings."""
    from cnncalc.labs import bn_fold as lab

    r = lab.run(source, images=images, seed=seed, dtype=dtype.value)
    if fmt is TableOrJson.json:
        _emit_json(r)
        if not r.agree:
            raise typer.Exit(code=1)
        return
    out = console()
    t = Table(title=f"batch norm folded into the layer before it ({_u(r.source)}"
                    f"{', checkpoint' if r.from_checkpoint else ', random BN statistics'})")
    for c in ("batch norm", "folded into", "kind", "channels"):
        t.add_column(c)
    for p in r.folded:
        t.add_row(_u(p.batchnorm), _u(p.into), p.kind, str(p.channels))
    out.print(t)
    s = Table(title="inference cost")
    for c in ("", "params", "MACs", "FLOPs", "activations"):
        s.add_column(c, justify="right")
    for label, d in (("before", r.before), ("after", r.after), ("saved", r.saved)):
        s.add_row(label, f"{d['params']:,}", f"{d['macs']:,}", f"{d['flops']:,}",
                  f"{d['activations']:,}")
    out.print(s)
    out.print(f"BN multiply-adds removed: {r.saved['bn_multiply_adds']:,} per image")
    verdict = "agree" if r.agree else "DISAGREE"
    out.print(f"outputs {verdict} on {r.images} images ({r.dtype}): max |diff| "
              f"{r.max_abs_diff:.3e}, relative {r.max_rel_diff:.3e} (tolerance 1e-5)")
    if r.not_folded:
        out.print("not folded (no conv/fc of their own before them): "
                  + _u(", ".join(r.not_folded)))
    _notes(out, r.notes)
    if not r.agree:
        raise typer.Exit(code=1)


# ------------------------------------------------------------------------------ preprocess
@commands.command("preprocess")
@handle_errors
def preprocess(
    data: str = typer.Option("synthetic", "--data", "-d", help="synthetic[:N] or mnist:DIR."),
    n: int = typer.Option(2000, "--n", min=2, help="Training images used."),
    seed: int = SeedOpt,
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
):
    """Centring, normalising, PCA, whitening; the lecture's badly scaled regression."""
    from cnncalc.labs import preprocess as lab

    r = lab.run(data, n=n, seed=seed, keep_arrays=plot is not None)
    _plot("preprocess", r, plot)
    if fmt is TableOrJson.json:
        _emit_json(r, ("mean_images", "covariances"))
        return
    out = console()
    c, h, w = r.shape
    t = Table(title=f"preprocessing {r.data}: {r.n} images of {h}x{w}x{c}, statistics after")
    for col in ("method", "channel mean", "channel std", "mean |mean image|",
                "pixel variance (mean)", "mean |covariance| off-diagonal"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m in r.methods:
        t.add_row(m.method, ", ".join(_g(v) for v in m.channel_mean),
                  ", ".join(_g(v) for v in m.channel_std), _g(m.mean_abs),
                  _g(m.variance_mean), _g(m.offdiag_abs_mean))
    out.print(t)
    fs = r.feature_scales
    g = Table(title=f"gradient descent on y = w1 x1 + w2 x2 + b (x1 ~ {fs['x1_mean']:.0f} +- "
                    f"{fs['x1_std']:.0f}, x2 ~ {fs['x2_mean']:.4f} +- {fs['x2_std']:.4f}); "
                    f"lr = 1/lambda_max, converged at gap <= {r.tol:g} x initial")
    for col in ("features", "condition number", "lr", "steps to converge", "gap left",
                "kappa ln(1/tol)", "|dL/dw1| at 0", "|dL/dw2| at 0"):
        g.add_column(col, justify="left" if col == "features" else "right")
    for run in r.regression:
        g.add_row(run.features, _g(run.condition_number), _g(run.lr),
                  str(run.steps_to_converge) if run.steps_to_converge
                  else f"> {r.max_steps}", _g(run.final_gap_ratio), _g(run.predicted_steps),
                  _g(run.initial_grad[0]), _g(run.initial_grad[1]))
    out.print(g)


# ------------------------------------------------------------------------------ filters
CheckpointArg = typer.Argument(..., help="A checkpoint written by cnncalc train.", exists=True,
                               dir_okay=False, readable=True, show_default=False)


@commands.command("filters")
@handle_errors
def filters(
    checkpoint: Path = CheckpointArg,
    layer: str = typer.Option(None, "--layer", "-l", help="Conv layer (default: the first)."),
    mean: bool = typer.Option(False, "--mean", help="One tile per filter: the mean over its "
                                                    "input channels."),
    sample: int = typer.Option(500, "--sample", min=0, help="Test images searched for dead "
                                                            "filters (0: skip)."),
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
    weights: bool = typer.Option(False, "--weights", help="Include the weights in JSON."),
):
    """A trained conv layer's filters: norms, means, dead filters; --plot draws them."""
    from cnncalc.labs import filters as lab

    r = lab.run(checkpoint, layer, mean=mean, sample=sample)
    _plot("filters", r, plot)
    if fmt is TableOrJson.json:
        _emit_json_arrays(r, weights)
        return
    out = console()
    k, c, fh, fw = r.shape
    t = Table(title=f"{r.checkpoint}: {r.layer}, {k} filters of {fh}x{fw}x{c}")
    for col in ("filter", "norm", "mean", "bias", "max ReLU output", "dead"):
        t.add_column(col, justify="right")
    for row in r.rows:
        t.add_row(f"#{row.index}", _g(row.norm), _g(row.mean), _g(row.bias),
                  _g(row.max_response), "-" if row.dead is None else "yes" if row.dead else "no")
    out.print(t)
    if r.dead_share is not None:
        out.print(f"dead filters: {sum(x.dead for x in r.rows)} of {k} ({r.dead_share:.0%}); "
                  f"dead = {r.relu} outputs 0 everywhere on the first {r.sample} test images "
                  f"of {r.data}")
    out.print(f"how alike: mean |cos| between filters {r.mean_abs_cosine:.3f} (1 = all the same)")
    _notes(out, r.notes)


# ------------------------------------------------------------------------------ activation-maps
@commands.command("activation-maps")
@handle_errors
def activation_maps(
    checkpoint: Path = CheckpointArg,
    image: str = typer.Option(..., "--image", "-i", help="FILE.png, FILE.npy (one image) or "
                                                         "FILE.npy[INDEX].", show_default=False),
    layers: str = typer.Option(None, "--layers", help="Comma-separated layers (default: every "
                                                      "layer with a spatial output)."),
    unit: str = typer.Option(None, "--unit", help="LAYER[:CHANNEL[@ROW,COL]] (default: the "
                                                  "strongest unit of the last layer shown)."),
    top_k: int = typer.Option(6, "--top-k", "-k", min=0, help="Test images that excite the "
                                                              "unit's channel most."),
    sample: int = typer.Option(1000, "--sample", min=0, help="Test images searched for the "
                                                             "top-k."),
    fmt: TableOrJson = FormatOpt,
    plot: Path = PlotOpt,
    maps: bool = typer.Option(False, "--maps", help="Include the maps and images in JSON."),
):
    """One image's activation maps at each layer; a unit's receptive field; its top-k images."""
    from cnncalc.labs import activation_maps as lab

    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    r = lab.run(checkpoint, image, names, unit=unit, top_k=top_k, sample=sample)
    _plot("activation_maps", r, plot)
    if fmt is TableOrJson.json:
        _emit_json_arrays(r, maps)
        return
    out = console()
    out.print(f"{r.image}: predicted {r.predicted} ({r.probability:.1%})")
    t = Table(title=f"activation maps of {r.image} ({r.checkpoint})")
    for col in ("layer", "type", "maps", "min", "max", "mean", "strongest channel"):
        t.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for m in r.layers:
        t.add_row(m.label, m.kind, str(m.shape[0]), _g(m.min), _g(m.max), _g(m.mean),
                  str(m.strongest))
    out.print(t)
    u = r.unit
    if u is not None:
        top, left, bottom, right = (_g(v) for v in u.box)
        out.print(f"unit {u.layer}[{u.channel}] at row {u.row}, col {u.col}: value {_g(u.value)}; "
                  f"receptive field {u.size[0]}x{u.size[1]} centred at (y, x) = "
                  f"({_g(u.centre[0])}, {_g(u.centre[1])}): rows {top}..{bottom}, cols "
                  f"{left}..{right}" + (" (reaches into the padding)" if u.exceeds_input else ""))
    if r.top:
        tt = Table(title=f"top {len(r.top)} of the first {r.sample} test images of {r.data} "
                         f"for {u.layer}[{u.channel}] (max over positions)")
        for col in ("test image", "class", "value", "at (row, col)", "field [top, left, "
                    "bottom, right]"):
            tt.add_column(col, justify="right")
        for x in r.top:
            tt.add_row(str(x.index), x.label, _g(x.value), f"({x.row}, {x.col})",
                       ", ".join(_g(v) for v in x.box))
        out.print(tt)
    _notes(out, r.notes)
