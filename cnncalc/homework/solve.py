"""The inverse problem: which kernel size F, stride S, padding P (and dilation) take an input
of size W1 to a wanted output size W2?

Every candidate is put through the layer's own rule (the analyzer's ``out_shape`` under the chosen
convention), so a listed solution is exactly what ``cnncalc layer`` would compute; each one is then
explained with the worked formula from :mod:`cnncalc.homework.explain`.

Sensible bounds (the defaults; each can be widened):

* F from 1 to ``max_kernel`` (default 11, AlexNet's largest), and no larger than the input;
* S from 1 to ``max(F_eff, 2)``: a stride above the kernel skips input pixels, except that a
  1x1 kernel may use stride 2 (ResNet's downsampling shortcut);
* P from 0 to ⌊F_eff/2⌋ (``max_pad``): "same" padding is (F − 1)/2, and more only adds border
  windows that see mostly zeros; it is also PyTorch's limit for pooling. With the darknet
  convention a conv's pad is the flag 0 or 1 and a maxpool's pad is the total, 0 to F − 1;
* dilation 1 unless fixed or ``max_dilation`` is raised.
"""
from __future__ import annotations

from cnncalc.conventions import get_convention
from cnncalc.errors import CnnCalcError, SpecError
from cnncalc.layers import LAYERS
from cnncalc.layers.base import Context, Shape, effective_kernel, out_size

MAX_CANDIDATES = 2_000_000


def _positive(name: str, v, allow_zero: bool = False):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
        raise SpecError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                        f"integer, got {v!r}")
    return v


def solve(input: int, output: int, *, kind: str = "conv", kernel: int | None = None,
          stride: int | None = None, padding: int | None = None, dilation: int | None = None,
          convention: str | None = None, strict: bool = False, max_kernel: int = 11,
          max_stride: int | None = None, max_dilation: int = 1, max_pad: int | None = None,
          exact: bool = False) -> dict:
    """Every (F, S, P, dilation) within the bounds that gives ``output`` from ``input``.

    ``exact`` keeps only settings where (W − F + 2P)/S + 1 is an integer (no rounding).
    """
    canon = LAYERS.canonical(kind)
    if canon not in ("conv", "maxpool", "avgpool"):
        raise SpecError(f"solve works for conv and pool layers, not '{kind}'",
                        hint="use conv, pool (maxpool) or avgpool")
    n = _positive("the input size", input)
    m = _positive("the output size", output)
    for name, v, zero in (("F (kernel size)", kernel, False), ("S (stride)", stride, False),
                          ("P (padding)", padding, True), ("dilation", dilation, False),
                          ("--max-kernel", max_kernel, False), ("--max-stride", max_stride, False),
                          ("--max-dilation", max_dilation, False),
                          ("--max-pad", max_pad, True)):
        _positive(name, v, zero)
    conv = get_convention(convention, strict)
    is_pool = canon != "conv"
    darknet_conv = conv.darknet and not is_pool
    darknet_pool = conv.darknet and canon == "maxpool"

    # ranges, not lists: a huge --max-dilation or --max-kernel is refused by the count below
    dils = [dilation] if dilation is not None else range(1, max_dilation + 1)
    limit_p = max(padding or 0, max_pad or 0)
    ks = ([kernel] if kernel is not None else range(1, min(max_kernel, n) + 1))
    candidates = 0
    for k in ks:
        for d in dils:
            candidates += (max_stride or max(effective_kernel(k, d), 2)) * (k + limit_p + 1)
            if candidates > MAX_CANDIDATES:
                break
        if candidates > MAX_CANDIDATES:
            break
    if candidates > MAX_CANDIDATES:
        raise SpecError("the search bounds are too wide for this homework tool",
                        hint="fix F, S or P, or lower --max-kernel / --max-stride / --max-pad "
                             "/ --max-dilation")

    cls = LAYERS.get(canon)
    ctx_conv = conv
    solutions = []
    for k in ks:
        for d in dils:
            k_eff = effective_kernel(k, d)
            strides = ([stride] if stride is not None else
                       list(range(1, (max_stride or max(k_eff, 2)) + 1)))
            if padding is not None:
                pads = [padding]
            elif darknet_conv:
                pads = [0, 1]
            elif darknet_pool:
                pads = list(range(k))
            else:
                pads = list(range((k_eff // 2 if max_pad is None else max_pad) + 1))
            for s in strides:
                for p in pads:
                    opts = {"kernel_size": (k, k), "stride": (s, s),
                            "padding": ((p, p), (p, p)), "dilation": (d, d)}
                    if not is_pool:
                        opts["out_channels"] = 1
                    layer = cls(**opts)
                    ctx = Context(ctx_conv)
                    try:
                        got = layer.out_shape([Shape(1, n, n)], ctx).w
                    except CnnCalcError:
                        continue
                    if got != m:
                        continue
                    pb, pa = layer.pads(Shape(1, n, n), ctx_conv)[1]
                    res = out_size(n, k, s, pb, pa, d,
                                   layer.ceil(ctx_conv) if is_pool else False)
                    if exact and not res.is_integer:
                        continue
                    solutions.append(_row(canon, n, k, s, p, d, m, res.is_integer, ctx_conv))
    if not solutions:
        raise SpecError(_no_solution(canon, n, m, kernel, stride, padding, dilation, conv,
                                     min(max_kernel, n)), hint=_no_solution_hint(n, m, conv, kernel, exact))
    return {
        "type": canon,
        "input": n,
        "output": m,
        "convention": conv.name,
        "fixed": {k: v for k, v in (("F", kernel), ("S", stride), ("P", padding),
                                    ("dilation", dilation)) if v is not None},
        "bounds": _bounds_text(kernel, min(max_kernel, n), max_stride, max_pad, conv),
        "solutions": solutions,
        "count": len(solutions),
    }


def _row(canon, n, k, s, p, d, m, exact, conv) -> dict:
    """One solution, explained by loading it as a one-layer spec (the analyzer's formula)."""
    from cnncalc.spec import load
    from cnncalc.homework.explain import explain_node

    opts = {"size": k, "stride": s, "pad": p}
    if d != 1:
        opts["dilation"] = d
    if canon == "conv":
        opts["filters"] = 1
    graph = load({"input": f"{n}x{n}x1", "layers": [{canon: opts}]},
                 convention=conv.name, strict=conv.strict)
    exp = explain_node(graph.nodes[0], graph)
    steps = [s_ for s_ in exp.topic("output") if s_.symbol.startswith("W2")]
    worked = steps[-1].worked
    return {"F": k, "S": s, "P": p, "dilation": d, "output": graph.nodes[0].out_shape.w,
            "exact": exact, "worked": worked, "notes": exp.notes}


def _bounds_text(kernel, max_kernel, max_stride, max_pad, conv) -> str:
    parts = []
    if kernel is None:
        parts.append(f"F <= {max_kernel}")
    parts.append(f"S <= {max_stride}" if max_stride else "S <= max(F, 2)")
    if conv.darknet:
        parts.append("P = darknet's pad value")
    else:
        parts.append(f"P <= {max_pad}" if max_pad is not None else "P <= F/2")
    return ", ".join(parts)


def _no_solution(canon, n, m, kernel, stride, padding, dilation, conv, max_kernel) -> str:
    fixed = ", ".join(f"{k}={v}" for k, v in (("F", kernel), ("S", stride), ("P", padding),
                                              ("dilation", dilation)) if v is not None)
    return (f"no {canon} gives output {m} from input {n}"
            + (f" with {fixed}" if fixed else "")
            + f" ({conv.name} convention"
            + (f", F <= {max_kernel}" if kernel is None else "") + ")")


def _no_solution_hint(n, m, conv, kernel, exact=False) -> str:
    if kernel is not None and kernel > n and m >= 1:
        return "the kernel is larger than the input: padding would have to exceed F - 1"
    if m > n:
        return ("an output larger than the input needs padding above (F - 1)/2 on each side; "
                "raise the bounds (--max-kernel) or use a transposed convolution")
    if conv.strict or exact:
        return ("cs231n requires (W - F + 2P)/S + 1 to be an integer; without --strict "
                "and --exact (pytorch's floor) more settings qualify")
    return "free one of F, S, P, or raise --max-kernel / --max-stride / --max-pad"
