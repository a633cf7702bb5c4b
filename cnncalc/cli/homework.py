"""Homework commands: `layer`, `explain`, `check`, `conv`, `solve`.

Thin: each command calls one function of :mod:`cnncalc.homework` and renders its plain data.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from cnncalc.cli.analyze import ConventionName, ConventionOpt, StrictOpt
from cnncalc.cli.app import app
from cnncalc.cli.common import console, handle_errors, print_json, warn
from cnncalc.cli.render import user_text


class HwFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


class Mode(str, Enum):
    full = "full"
    valid = "valid"
    same = "same"


FormatOpt = typer.Option(HwFormat.table, "--format", "-f", help="table (text), json, markdown.")
TOPIC_TITLES = {"output": "output volume", "params": "parameters", "macs": "MACs",
                "rf": "receptive field"}


def _conv(convention):
    return convention.value if convention is not None else None


# ---------------------------------------------------------------------------------------------
# rendering helpers (formatting only)


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _step_groups(steps: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for s in steps:
        groups.setdefault(s["topic"], []).append(s)
    return [(t, groups[t]) for t in ("output", "params", "macs", "rf") if t in groups]


def _headline(topic: str, steps: list[dict]) -> str:
    if topic == "output":
        vol = [s for s in steps if s["symbol"] == "volume"]
        return vol[0]["value"] if vol else ""
    if topic == "rf":
        r = [s for s in steps if s["symbol"].startswith("r")]
        j = [s for s in steps if s["symbol"].startswith("j")]
        size = "x".join(str(s["value"]) for s in r)
        stride = "x".join(str(s["value"]) for s in j)
        return f"{size} (stride {stride})"
    final = [s for s in steps if s["symbol"] in ("params", "MACs")]
    return _num(final[-1]["value"]) if final else ""


def _layer_text(steps: list[dict], notes: list[str], indent: str = "  ") -> list[str]:
    lines = []
    for topic, group in _step_groups(steps):
        lines.append(f"{indent}[bold]{TOPIC_TITLES[topic]}[/]: {user_text(_headline(topic, group))}")
        for s in group:
            if s["symbol"] == "volume":
                continue
            lines.append(f"{indent}  {user_text(s['text'])}")
    for note in notes:
        lines.append(f"{indent}[dim]note: {user_text(note)}[/]")
    return lines


def _layer_markdown(steps: list[dict], notes: list[str]) -> list[str]:
    lines = []
    for topic, group in _step_groups(steps):
        lines.append(f"- **{TOPIC_TITLES[topic]}**: {_headline(topic, group)}")
        for s in group:
            if s["symbol"] != "volume":
                lines.append(f"  - `{s['text']}`")
    for note in notes:
        lines.append(f"- *note*: {note}")
    return lines


# ---------------------------------------------------------------------------------------------
# layer


@app.command("layer")
@handle_errors
def layer_cmd(
    kind: str = typer.Argument(..., help="conv, pool (maxpool), avgpool or fc.",
                               show_default=False),
    input: str = typer.Option(..., "--input", "-i", help="Input volume WxHxD, e.g. 32x32x3 "
                              "(a bare number N means 1x1xN, for fc).", show_default=False),
    filters: int = typer.Option(None, "--filters", "-K", help="K: number of filters (conv)."),
    size: str = typer.Option(None, "--size", "-F", help="F: filter/window size (or HxW)."),
    stride: str = typer.Option(None, "--stride", "-S", help="S: stride (pool default: F)."),
    pad: str = typer.Option(None, "--pad", "-P", help="P: zero padding, or same/valid."),
    dilation: str = typer.Option(None, "--dilation", "-d", help="Dilation (conv, pool)."),
    groups: int = typer.Option(None, "--groups", "-g", help="Groups (conv)."),
    units: int = typer.Option(None, "--units", "-N", help="N: output units (fc)."),
    bias: bool = typer.Option(None, "--bias/--no-bias", help="With or without biases."),
    ceil: bool = typer.Option(None, "--ceil/--floor", help="Pool rounding (ceil_mode)."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    fmt: HwFormat = FormatOpt,
):
    """One layer on one input: output volume, params, MACs and RF, with the formulas.

    Example: cnncalc layer conv --input 32x32x3 -K 10 -F 5 -S 1 -P 2
    """
    from cnncalc.homework.calc import layer_calc

    opts = {"filters": filters, "size": size, "stride": stride, "pad": pad,
            "dilation": dilation, "groups": groups, "units": units, "bias": bias,
            "ceil_mode": ceil}
    result = layer_calc(kind, input, opts, strict=strict, convention=_conv(convention))
    if fmt is HwFormat.json:
        print_json(result)
        return
    if fmt is HwFormat.markdown:
        lines = [f"**{result['type']} {result['hyper']}** on {result['input']} "
                 f"({result['convention']} convention)", ""]
        lines += _layer_markdown(result["steps"], result["notes"])
        typer.echo("\n".join(lines))
    else:
        out = console()
        out.print(f"[bold]{result['type']}[/] {user_text(result['hyper'])} on "
                  f"{result['input']}  ({result['convention']} convention)")
        for line in _layer_text(result["steps"], result["notes"], indent=""):
            out.print(line)
    for w in result["warnings"]:
        warn(w)


# ---------------------------------------------------------------------------------------------
# explain


@app.command("explain")
@handle_errors
def explain_cmd(
    spec: Path = typer.Argument(..., help="YAML architecture spec.", show_default=False),
    layer: str = typer.Option(None, "--layer", "-l", help="Only this layer (name or index)."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    fmt: HwFormat = FormatOpt,
):
    """Each layer's formulas with the numbers filled in (output, params, MACs, RF).

    The output size, the parameters (F·F·D1)·K + K, the MACs and the receptive-field recurrence,
    as a student would write them; --format markdown for pasting into a report.
    """
    from cnncalc.spec import load
    from cnncalc.homework.explain import explain

    graph = load(spec, strict=strict, convention=_conv(convention))
    report = explain(graph, layer)
    if fmt is HwFormat.json:
        print_json(report)
        return
    if fmt is HwFormat.markdown:
        lines = [f"## {report['name']}", "",
                 f"Input {report['input']}; {report['convention']} convention "
                 f"({report['convention_rule']}).", ""]
        for e in report["layers"]:
            lines.append(f"### {e['index']}. {e['name']} ({e['type']}"
                         + (f" {e['hyper']}" if e["hyper"] else "") + f"): "
                         f"{e['input']} → {e['output']}")
            lines.append("")
            lines += _layer_markdown(e["steps"], e["notes"])
            lines.append("")
        if report["totals"]:
            lines.append("### Totals")
            lines.append("")
            lines += [f"- `{s['text']}`" for s in report["totals"]]
        typer.echo("\n".join(lines))
    else:
        out = console()
        out.print(f"[bold]{user_text(report['name'])}[/]  input {report['input']}, "
                  f"{report['convention']} convention ({user_text(report['convention_rule'])})")
        for e in report["layers"]:
            out.print()
            out.print(f"[bold]{e['index']}. {user_text(e['name'])}[/] ({e['type']}"
                      + (f" {user_text(e['hyper'])}" if e["hyper"] else "")
                      + f"): {e['input']} → {e['output']}")
            for line in _layer_text(e["steps"], e["notes"]):
                out.print(line)
        if report["totals"]:
            out.print()
            out.print("[bold]totals[/]")
            for s in report["totals"]:
                out.print(f"  {user_text(s['text'])}")
    for w in report["warnings"]:
        warn(w)


# ---------------------------------------------------------------------------------------------
# check


@app.command("check")
@handle_errors
def check_cmd(
    spec: Path = typer.Argument(..., help="YAML architecture spec.", show_default=False),
    answers: Path = typer.Argument(..., help="YAML answers file (see README).",
                                   show_default=False),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    fmt: HwFormat = FormatOpt,
    report_html: Path = typer.Option(None, "--report", help="Also write an HTML report with "
                                     "the marking table.", dir_okay=False),
):
    """Mark a student's answers file against a spec, with a score.

    Each claim is right or wrong; a wrong one shows the correct value and the worked formula.
    Exit code 0 when all are right, 1 when any is wrong, 2 on bad input.
    """
    from cnncalc.homework.check import check

    report = check(spec, answers, strict=strict, convention=_conv(convention))
    if report_html is not None:
        from cnncalc.report import write_check_report
        write_check_report(spec, report, report_html, strict=strict, convention=_conv(convention))
    if fmt is HwFormat.json:
        print_json(report)
    elif fmt is HwFormat.markdown:
        lines = [f"## Marking: {report['spec']} ({report['convention']} convention)", "",
                 "| layer | quantity | answer | correct | |", "|---|---|---|---|---|"]
        for r in report["results"]:
            lines.append(f"| {r['layer']} | {r['quantity']} | {r['written']} | "
                         f"{_num(r['correct'])} | {'✓' if r['ok'] else '✗'} |")
        wrong = [r for r in report["results"] if not r["ok"]]
        if wrong:
            lines += ["", "### Corrections", ""]
            for r in wrong:
                lines.append(f"- **{r['layer']} {r['quantity']}**: {_num(r['correct'])}")
                lines += [f"  - `{w}`" for w in r["worked"]]
        lines += ["", f"**Score: {report['score']}**"]
        typer.echo("\n".join(lines))
    else:
        out = console()
        out.print(f"[bold]{user_text(report['spec'])}[/]  ({report['convention']} convention)")
        for r in report["results"]:
            mark = "[green]✓ right[/]" if r["ok"] else "[red]✗ wrong[/]"
            text = (f"{mark}  {user_text(r['layer'])} {r['quantity']}: {user_text(str(r['written']))}")
            if not r["ok"]:
                text += f"  → correct: [bold]{user_text(_num(r['correct']))}[/]"
            out.print(text)
            for w in r["worked"]:
                out.print(f"      {user_text(w)}")
        color = "green" if report["all_right"] else "red"
        out.print(f"[bold {color}]score: {report['score']}[/]")
    for w in report["warnings"]:
        warn(w)
    if not report["all_right"]:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------
# conv


def _cell(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _paren(v) -> str:
    s = _cell(v)
    return f"({s})" if s.startswith("-") else s


def _matrix_lines(m: list[list], indent: str = "  ") -> list[str]:
    cells = [[_cell(v) for v in row] for row in m]
    width = max(len(c) for row in cells for c in row)
    return [indent + " ".join(c.rjust(width) for c in row) for row in cells]


@app.command("conv")
@handle_errors
def conv_cmd(
    a: str = typer.Argument(..., help='Input matrix: "1,3,1; 0,-1,1; 2,2,-1" (depth slices '
                            'separated by |), [[...]], or a file.', show_default=False),
    b: str = typer.Argument(..., help="Kernel, same notations.", show_default=False),
    mode: Mode = typer.Option(Mode.full, "--mode", "-m", help="full, valid or same."),
    stride: int = typer.Option(1, "--stride", "-S", help="Stride."),
    pad: int = typer.Option(0, "--pad", "-P", help="Zero padding added on every side first."),
    correlate: bool = typer.Option(False, "--correlate", help="Cross-correlation (what CNN "
                                   "layers compute): the kernel is not flipped."),
    steps: bool = typer.Option(False, "--steps", help="Show each output cell's sum of "
                               "products."),
    fmt: HwFormat = FormatOpt,
):
    """2-D convolution (kernel flipped) or cross-correlation of small matrices.

    Example: cnncalc conv "1,3,1; 0,-1,1; 2,2,-1" "1,2; 0,-1" --steps
    """
    from cnncalc.homework.conv2d import conv2d

    r = conv2d(a, b, mode=mode.value, stride=stride, pad=pad, correlate=correlate, steps=steps)
    if fmt is HwFormat.json:
        print_json(r)
        return
    md = fmt is HwFormat.markdown
    (pt, pb), (pl, pr) = r["padding"]
    pad_text = str(pt) if pt == pb == pl == pr else f"top {pt} bottom {pb} left {pl} right {pr}"
    head = (f"{r['operation']}"
            + (" (kernel rotated 180°)" if r["flipped"] else " (kernel not flipped)")
            + f", mode {r['mode']}, stride {r['stride']}, zero padding {pad_text}")

    def shape(dims):
        return "x".join(str(x) for x in dims)

    lines = [head, r["formula"],
             f"input {shape(r['input_shape'])}, kernel {shape(r['kernel_shape'])} → output "
             f"{shape(r['output_shape'])}"]
    kern = r["kernel_used"]
    if r["flipped"]:
        lines.append("kernel as slid over the input (rotated 180°):")
        slices = kern if len(r["kernel_shape"]) == 3 else [kern]
        for d, sl in enumerate(slices):
            if len(slices) > 1:
                lines.append(f"  depth {d + 1}:")
            lines += _matrix_lines(sl)
    lines.append("output:")
    lines += _matrix_lines(r["output"])
    if steps:
        lines.append("steps (input · kernel, summed over the window"
                     + (" and the depth" if len(r["kernel_shape"]) == 3 else "") + "):")
        for st in r["steps"]:
            i, j = st["index"]
            terms = " + ".join(f"{_paren(x)}·{_paren(y)}" for x, y in st["terms"])
            lines.append(f"  out[{i},{j}] = {terms} = {_cell(st['value'])}")
    lines += [f"note: {n}" for n in r["notes"]]
    if md:
        typer.echo(f"**{lines[0]}**\n\n```\n" + "\n".join(lines[1:]) + "\n```")
    else:
        out = console()
        out.print(f"[bold]{user_text(lines[0])}[/]")
        for line in lines[1:]:
            out.print(user_text(line))


# ---------------------------------------------------------------------------------------------
# solve


@app.command("solve")
@handle_errors
def solve_cmd(
    kind: str = typer.Argument("conv", help="conv, pool (maxpool) or avgpool."),
    input: int = typer.Option(..., "--input", "-i", help="Input size W1 (one axis).",
                              show_default=False),
    output: int = typer.Option(..., "--output", "-o", help="Wanted output size W2.",
                               show_default=False),
    size: int = typer.Option(None, "--size", "-F", help="Fix F."),
    stride: int = typer.Option(None, "--stride", "-S", help="Fix S."),
    pad: int = typer.Option(None, "--pad", "-P", help="Fix P."),
    dilation: int = typer.Option(None, "--dilation", "-d", help="Fix the dilation."),
    max_kernel: int = typer.Option(11, "--max-kernel", help="Largest F to try."),
    max_stride: int = typer.Option(None, "--max-stride",
                                   help="Largest S to try (default max(F, 2))."),
    max_dilation: int = typer.Option(1, "--max-dilation", help="Largest dilation to try."),
    max_pad: int = typer.Option(None, "--max-pad", help="Largest P to try (default F/2)."),
    exact: bool = typer.Option(False, "--exact", help="Only settings where (W - F + 2P)/S + 1 "
                               "is an integer (no rounding)."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    fmt: HwFormat = FormatOpt,
):
    """Inverse problem: every F, S, P (and dilation) giving the wanted output size.

    Bounds: F <= min(--max-kernel, input), S <= max(F, 2), P <= F/2 (each can be fixed or
    widened); --exact (or --strict) keeps only settings that need no rounding.
    """
    from cnncalc.homework.solve import solve

    r = solve(input, output, kind=kind, kernel=size, stride=stride, padding=pad,
              dilation=dilation, convention=_conv(convention), strict=strict,
              max_kernel=max_kernel, max_stride=max_stride, max_dilation=max_dilation,
              max_pad=max_pad, exact=exact)
    if fmt is HwFormat.json:
        print_json(r)
        return
    fixed = ", ".join(f"{k} = {v}" for k, v in r["fixed"].items())
    title = (f"{r['type']}: {r['input']} → {r['output']}" + (f" with {fixed}" if fixed else "")
             + f"  ({r['convention']} convention; bounds {r['bounds']}): "
             f"{r['count']} solution{'s' if r['count'] != 1 else ''}")
    show_d = any(s["dilation"] != 1 for s in r["solutions"])
    if fmt is HwFormat.markdown:
        head = ["F", "S", "P"] + (["dilation"] if show_d else []) + ["W2", "exact"]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for s in r["solutions"]:
            cells = [s["F"], s["S"], s["P"]] + ([s["dilation"]] if show_d else []) + [
                f"`{s['worked']}`", "yes" if s["exact"] else "no (rounded)"]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        typer.echo("\n".join(lines))
        return
    out = console()
    out.print(f"[bold]{user_text(title)}[/]")
    table = Table()
    for c in ["F", "S", "P"] + (["dilation"] if show_d else []) + ["W2", "exact"]:
        table.add_column(c, justify="right" if len(c) == 1 else "left")
    for s in r["solutions"]:
        cells = [s["F"], s["S"], s["P"]] + ([s["dilation"]] if show_d else []) + [
            user_text(s["worked"]), "yes" if s["exact"] else "no (rounded)"]
        table.add_row(*(str(c) for c in cells))
    out.print(table)
    notes = sorted({n for s in r["solutions"] for n in s["notes"]})
    for n in notes[:3]:
        out.print(f"[dim]note: {user_text(n)}[/]")
