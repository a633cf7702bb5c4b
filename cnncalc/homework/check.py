"""Mark a student's answers against the analyzer.

The answers file (YAML) lists claims per layer and for the totals::

    convention: pytorch          # optional: any --convention name (or strict: true)
    layers:
      conv1: {output: 28x28x6, params: 156, macs: 117600, rf: 5}
      pool1: {output: "[14, 14, 6]", rf: [6, 2]}       # rf as size, or [size, stride]
      4: {params: "2,416"}                              # a layer by 1-based index
    totals:
      params: 61706
      macs: 4.1652e5

Claims a layer can carry: ``output`` (volume W x H x D), ``width``, ``height``, ``depth``,
``params``, ``weights``, ``biases``, ``macs``, ``flops``, ``rf``. Totals: ``output`` (the network's
output volume), ``params``, ``macs``, ``flops``. Each correct value comes from the analyzer
(:meth:`Graph.analyze`), and each wrong claim is shown with its worked formula
(:mod:`cnncalc.homework.explain`).
"""
from __future__ import annotations

import difflib
import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cnncalc.errors import SpecError
from cnncalc.layers.options import shown
from cnncalc.spec import load
from cnncalc.homework.explain import explain_node, select_node, total_steps
from cnncalc.spec.loader import parse_yaml

LAYER_CLAIMS = {
    "output": "output", "out": "output", "volume": "output", "output_volume": "output",
    "shape": "output", "output_shape": "output",
    "width": "width", "W2": "width", "height": "height", "H2": "height",
    "depth": "depth", "D2": "depth",
    "params": "params", "parameters": "params", "n_params": "params",
    "weights": "weights", "biases": "biases",
    "macs": "macs", "MACs": "macs", "mult_adds": "macs", "multiply_adds": "macs",
    "flops": "flops", "FLOPs": "flops",
    "rf": "rf", "receptive_field": "rf",
}
TOTAL_CLAIMS = ("output", "params", "macs", "flops")
TOP_KEYS = ("layers", "totals", "convention", "strict", "name", "student", "spec",
            "description")
_SUFFIX = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}


# ---------------------------------------------------------------------------------------------
# Notations students use


#: answers are counts of a network: anything past 10^30 is a typo (or an attack on the output)
MAX_COUNT = 10**30


def parse_count(v):
    """``760``, ``"760"``, ``7.6e2``, ``"7.6e2"``, ``"61,706"``, ``"61 706"``, ``"416.52k"``
    → a finite number (int when whole) of magnitude at most 10^30. Raises ValueError on
    anything else."""
    value = _parse_count(v)
    if abs(value) > MAX_COUNT:
        raise ValueError(f"{shown(v)} is larger than any network's count (at most 10^30)")
    return value


def _parse_count(v):
    if isinstance(v, bool) or v is None:
        raise ValueError(f"expected a number, got {shown(v)}")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {shown(v)}")
        return int(v) if v.is_integer() else v
    if not isinstance(v, str):
        raise ValueError(f"expected a number, got {shown(v)}")
    if len(v) > 64:
        raise ValueError(f"expected a number, got {shown(v)} ({len(v):,} characters)")
    t = v.strip().replace("_", "").replace(" ", "").replace("\u202f", "").replace("\u00a0", "")
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    mult = 1
    if t and t[-1] in _SUFFIX:
        mult = _SUFFIX[t[-1]]
        t = t[:-1]
    try:
        d = Decimal(t) * mult
    except InvalidOperation:
        raise ValueError(f"expected a number, got {shown(v)}") from None
    if not d.is_finite() or abs(d) > MAX_COUNT:
        raise ValueError(f"expected a finite number of at most 10^30, got {shown(v)}")
    return int(d) if d == d.to_integral_value() else float(d)


def parse_volume(v) -> tuple:
    """``32x32x10``, ``32 x 32 x 10``, ``[32, 32, 10]``, ``"(32, 32, 10)"`` or
    ``{width: 32, height: 32, depth: 10}`` → (W, H, D), the lecture's order."""
    if isinstance(v, dict):
        keys = {str(k).lower(): val for k, val in v.items()}
        try:
            return tuple(parse_count(keys[k]) for k in ("width", "height", "depth"))
        except KeyError:
            raise ValueError(f"expected width, height and depth, got {shown(v)}") from None
    if isinstance(v, (list, tuple)):
        parts = list(v)
    elif isinstance(v, str):
        t = v.strip().strip("[]()").replace("×", "x").replace("X", "x").replace("*", "x")
        parts = [p for p in re.split(r"\s*[x,]\s*|\s+", t) if p] if t else []
    else:
        raise ValueError(f"expected a volume like 32x32x10, got {shown(v)}")
    if len(parts) != 3:
        raise ValueError(f"expected a volume W x H x D like 32x32x10, got {shown(v)}")
    return tuple(parse_count(p) for p in parts)


def _pair(v):
    if isinstance(v, str) and re.search(r"[x×]", v):
        parts = re.split(r"\s*[x×]\s*", v.strip())
        if len(parts) != 2:
            raise ValueError(f"expected a size or WxH, got {shown(v)}")
        w, h = (parse_count(p) for p in parts)
        return (h, w)
    x = parse_count(v)
    return (x, x)


def parse_rf(v) -> dict:
    """``5``, ``"5"``, ``"5x7"`` (W x H), ``[14, 2]`` (size, stride) or
    ``{size: 14, stride: 2}`` → {"size": (h, w), "stride": (h, w) or None}."""
    if isinstance(v, dict):
        unknown = set(v) - {"size", "stride", "jump"}
        if unknown or "size" not in v:
            raise ValueError(f"expected {{size: ..., stride: ...}}, got {shown(v)}")
        stride = v.get("stride", v.get("jump"))
        return {"size": _pair(v["size"]), "stride": None if stride is None else _pair(stride)}
    if isinstance(v, str) and v.strip().startswith(("[", "(")):
        inner = [p for p in re.split(r"\s*,\s*", v.strip().strip("[]()")) if p]
        v = inner
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"expected [size, stride], got {shown(v)}")
        return {"size": _pair(v[0]), "stride": _pair(v[1])}
    return {"size": _pair(v), "stride": None}


# ---------------------------------------------------------------------------------------------
# Marking


def load_answers(answers) -> tuple[dict, object, str | None]:
    """Answers file path, YAML text or dict → (data, source map, file name)."""
    from cnncalc.spec.loader import SourceMap

    if isinstance(answers, dict):
        return answers, SourceMap(), None
    path = Path(answers) if not (isinstance(answers, str) and "\n" in answers) else None
    if path is not None:
        if not path.is_file():
            raise SpecError(f"answers file '{path}' not found",
                            hint="give the path of a YAML answers file, e.g. "
                                 "specs/answers_lenet5.yaml")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read answers file '{path}': {err}") from None
        file = str(path)
    else:
        text, file = answers, None
    data, smap = parse_yaml(text, file)
    return data, smap, file


def check(spec, answers, *, strict: bool = False, convention: str | None = None) -> dict:
    """Mark every claim in ``answers`` against ``spec``; see the module docstring."""
    data, smap, file = load_answers(answers)

    def err(message, path=(), hint=None):
        return SpecError(message, hint=hint, location=smap.locate(path), path=path)

    if not isinstance(data, dict):
        raise err("an answers file must be a YAML mapping with 'layers' and/or 'totals'",
                  hint="start with:  layers:\\n  conv1: {output: 28x28x6, params: 156}")
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            raise err(f"unknown key '{key}' in the answers file", (key,),
                      hint=(f"did you mean '{close[0]}'?" if close else
                            f"allowed keys: {', '.join(TOP_KEYS)}"))
    layers = data.get("layers") or {}
    totals = data.get("totals") or {}
    if not isinstance(layers, dict):
        raise err("'layers' must map layer names to claims", ("layers",),
                  hint="e.g.  layers:\\n  conv1: {output: 28x28x6, params: 156}")
    if not isinstance(totals, dict):
        raise err("'totals' must map params/macs/flops/output to claims", ("totals",))
    if not layers and not totals:
        raise err("the answers file claims nothing", (),
                  hint="list claims under 'layers:' and/or 'totals:'")
    if convention is None and data.get("convention") is not None:
        convention = str(data["convention"])
    if not strict and data.get("strict") is True:
        strict = True
    try:
        graph = load(spec, strict=strict, convention=convention)
    except SpecError as e:
        if e.path == ("convention",) or "convention" in e.message:
            raise err(e.message, ("convention",), hint=e.hint) from None
        raise
    report = graph.analyze()
    rows = {r["name"]: r for r in report["layers"]}
    results = []
    for ref, claims in layers.items():
        try:
            node = select_node(graph, ref)
        except SpecError as e:
            raise err(e.message + f" (spec '{graph.name}')", ("layers", ref), hint=e.hint) \
                from None
        if not isinstance(claims, dict):
            raise err(f"layer '{ref}': claims must be a mapping, e.g. "
                      "{output: 28x28x6, params: 156}", ("layers", ref))
        exp = explain_node(node, graph)
        row = rows[node.name]
        for key, value in claims.items():
            canon = LAYER_CLAIMS.get(str(key))
            if canon is None:
                close = difflib.get_close_matches(str(key), list(LAYER_CLAIMS), n=1)
                raise err(f"layer '{ref}': unknown claim '{key}'", ("layers", ref, key),
                          hint=(f"did you mean '{close[0]}'? " if close else "")
                          + "claims: output, width, height, depth, params, weights, biases, "
                            "macs, flops, rf")
            try:
                results.append(_mark(node.name, canon, value, node, row, exp.steps))
            except ValueError as e:
                raise err(f"layer '{ref}', {key}: {e}", ("layers", ref, key)) from None
    t_steps = total_steps(graph)
    for key, value in totals.items():
        canon = str(key).lower()
        if canon == "parameters":
            canon = "params"
        if canon not in TOTAL_CLAIMS:
            raise err(f"totals: unknown claim '{key}'", ("totals", key),
                      hint=f"totals take: {', '.join(TOTAL_CLAIMS)}")
        try:
            results.append(_mark_total(canon, value, graph, report, t_steps))
        except ValueError as e:
            raise err(f"totals, {key}: {e}", ("totals", key)) from None
    right = sum(r["ok"] for r in results)
    return {
        "spec": graph.name,
        "answers": file,
        "convention": graph.convention.name,
        "results": results,
        "right": right,
        "total": len(results),
        "score": f"{right}/{len(results)}",
        "all_right": right == len(results),
        "warnings": list(graph.warnings),
    }


def _texts(steps, topic, symbols=None):
    return [s.text for s in steps if s.topic == topic
            and (symbols is None or any(s.symbol.startswith(x) for x in symbols))]


def _mark(name, canon, value, node, row, steps) -> dict:
    y = node.out_shape
    if canon == "output":
        claimed = parse_volume(value)
        correct = (y.w, y.h, y.c)
        ok = claimed == correct
        shown = "x".join(str(c) for c in claimed)
        return _result(name, "output", value, shown, y.lecture(), ok,
                       _texts(steps, "output"))
    if canon in ("width", "height", "depth"):
        claimed = parse_count(value)
        correct = {"width": y.w, "height": y.h, "depth": y.c}[canon]
        sym = {"width": ("W2", "F_eff"), "height": ("H2", "W2 = H2", "F_eff"),
               "depth": ("D2",)}[canon]
        return _result(name, canon, value, claimed, correct, claimed == correct,
                       _texts(steps, "output", sym))
    if canon == "rf":
        claimed = parse_rf(value)
        rf = node.rf
        ok = claimed["size"] == tuple(rf.size)
        if claimed["stride"] is not None:
            ok = ok and claimed["stride"] == tuple(rf.stride)
        correct = _rf_text(rf.size, rf.stride if claimed["stride"] is not None else None)
        shown = _rf_text(claimed["size"], claimed["stride"])
        return _result(name, "rf", value, shown, correct, ok, _texts(steps, "rf"))
    claimed = parse_count(value)
    correct = row[canon]
    topic = "macs" if canon in ("macs", "flops") else "params"
    worked = _texts(steps, topic)
    if canon == "flops":
        worked = worked + [f"FLOPs = 2·MACs + bias adds (+ compares/adds of pools, "
                           f"activations) = {correct:,}"]
    if canon in ("weights", "biases"):
        worked = worked + [f"weights = {row['weights']:,}, biases = {row['biases']:,}"]
    return _result(name, canon, value, claimed, correct, claimed == correct, worked)


def _mark_total(canon, value, graph, report, t_steps) -> dict:
    if canon == "output":
        claimed = parse_volume(value)
        y = graph.output_shape
        return _result("totals", "output", value, "x".join(str(c) for c in claimed),
                       y.lecture(), claimed == (y.w, y.h, y.c),
                       [f"output of the last layer '{graph.output.name}' = {y.lecture()}"])
    claimed = parse_count(value)
    # learnable parameters, as the lecture counts them (the sum in the worked formula)
    correct = report["totals"][canon]
    worked = [s.text for s in t_steps if s.topic == canon]
    if canon == "flops":
        worked = [f"total FLOPs = sum of the layers' FLOPs = {correct:,}"]
    return _result("totals", canon, value, claimed, correct, claimed == correct, worked)


def _rf_text(size, stride) -> str:
    h, w = size
    text = str(h) if h == w else f"{w}x{h}"
    if stride is not None:
        sh, sw = stride
        text += f" (stride {sh if sh == sw else f'{sw}x{sh}'})"
    return text


def _result(layer, quantity, raw, claimed, correct, ok, worked) -> dict:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return {"layer": layer, "quantity": quantity, "claimed": _jsonable(claimed),
            "written": raw if isinstance(raw, (int, float, str)) else str(raw),
            "correct": _jsonable(correct), "ok": bool(ok),
            "worked": [] if ok else list(worked)}


def _jsonable(v):
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    return v
