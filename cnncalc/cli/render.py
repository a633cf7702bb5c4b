"""Analysis data → rich table, markdown or CSV. No arithmetic here beyond formatting."""
from __future__ import annotations

import csv
import io
import unicodedata

from rich.markup import escape
from rich.table import Table

from cnncalc.analysis import format_bytes


# Characters a terminal acts on instead of showing: C0/C1 controls (ESC starts colour, cursor,
# title and hyperlink sequences) and the bidirectional overrides that reorder what is shown.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), never acted on.

    A spec's names, a data set's class names and file paths reach the terminal; an escape
    sequence in one could clear the screen, retitle the window or print a fake line. With
    ``keep_newlines`` a multi-line message keeps its line breaks (and only those).
    """
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
        elif unicodedata.category(ch) == "Cc" or ch in _BIDI:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def user_text(text: str, keep_newlines: bool = False) -> str:
    """A user-supplied string made safe for rich: controls visible, markup escaped.

    ``[/bold]`` in a layer name would otherwise end a style that was never opened (a crash),
    and ``[link=...]`` would become a hyperlink.
    """
    return escape(visible(text, keep_newlines))


def vol(d: dict) -> str:
    return f"{d['width']}x{d['height']}x{d['depth']}"


def num(n) -> str:
    return f"{n:,}"


def rf_text(rf: dict) -> str:
    (h, w), (sh, sw) = rf["size"], rf["stride"]
    size = f"{h}" if h == w else f"{h}x{w}"
    stride = f"{sh}" if sh == sw else f"{sh}x{sw}"
    return f"{size} /{stride}"


COLUMNS = ("#", "layer", "type", "hyperparameters", "input", "output", "params", "MACs",
           "activations", "RF /stride")


def row_cells(r: dict) -> list[str]:
    rf = rf_text(r["rf"]) + (" !" if r["rf_exceeds_input"] else "")
    params = num(r["params"])
    if r["buffers"]:
        params += f" (+{num(r['buffers'])})"
    if not r["trainable"] and r["params"]:
        params += " frozen"
    shares = r.get("shares") or {}
    if shares:     # all from one layer: "shares conv1"; some: "5 + weight of fc1"
        owners = sorted(set(shares.values()))
        params = (f"shares {owners[0]}" if not r["params"] and len(owners) == 1 else
                  f"{params} + " + ", ".join(f"{k} of {v}" for k, v in shares.items()))
    return [str(r["index"]), visible(r["name"]), visible(r["type"]), visible(r["hyper"]),
            vol(r["input"]), vol(r["output"]), params, num(r["macs"]), num(r["activations"]), rf]


def title_text(report: dict) -> str:
    return (f"{visible(report['name'])}  (input {vol(report['input'])}, "
            f"{report['convention']} convention)")


def totals_lines(report: dict) -> list[str]:
    t = report["totals"]
    params = f"params: {num(t['params'])}"
    if t["non_trainable_params"]:
        params += (f" (trainable {num(t['trainable_params'])}, frozen "
                   f"{num(t['non_trainable_params'])})")
    lines = [params]
    if t["buffers"]:
        lines.append(f"buffers: {num(t['buffers'])} (batchnorm running statistics: stored, "
                     "not learned; shown as (+n) in the table)")
    lines += [
        f"MACs: {num(t['macs'])}   FLOPs: {num(t['flops'])}   (per example)",
        f"training MACs: {num(t['train_macs']['per_example'])} per example (forward "
        f"{num(t['train_macs']['forward'])} + dX {num(t['train_macs']['backward_input'])} + dW "
        f"{num(t['train_macs']['backward_weights'])}), {num(t['train_macs']['per_step'])} per "
        f"step of batch {t['batch']}",
        f"activations: {num(t['activations'])} values; forward memory (float32) "
        f"{format_bytes(t['bytes'])} per example"
        + (f", {format_bytes(t['batch_bytes'])} for batch {t['batch']}" if t["batch"] > 1 else ""),
        f"parameter memory: {format_bytes(t['param_bytes'])}"
        + (" (parameters and buffers)" if t["buffers"] else ""),
    ]
    tr = t.get("training")
    if tr:
        lines.append(
            f"training memory ({tr['optimizer']}, batch {t['batch']}): "
            f"{format_bytes(tr['total_bytes'])} = weights {format_bytes(tr['param_bytes'])} "
            f"+ gradients {format_bytes(tr['gradient_bytes'])} + optimizer state "
            f"{format_bytes(tr['optimizer_state_bytes'])} + activations "
            f"{format_bytes(tr['activation_bytes'])} + activation gradients "
            f"{format_bytes(tr['activation_gradient_bytes'])}")
    return lines


def analysis_table(report: dict) -> Table:
    table = Table(title=escape(title_text(report)), title_justify="left")
    for c in COLUMNS:
        table.add_column(c, justify="right" if c in ("#", "params", "MACs", "activations")
                         else "left", no_wrap=c in ("layer", "input", "output"))
    for r in report["layers"]:
        table.add_row(*map(escape, row_cells(r)), style="yellow" if r["warnings"] else None)
    return table


#: Above this many rows rich's table layout dominates the run time; print plain columns instead.
RICH_TABLE_MAX_ROWS = 150

RIGHT_ALIGNED = ("#", "params", "MACs", "activations")


def plain_table(report: dict) -> str:
    """Aligned text columns: the same cells as :func:`analysis_table`, linear time."""
    rows = [row_cells(r) for r in report["layers"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

    def line(cells):
        return "  ".join(c.rjust(w) if name in RIGHT_ALIGNED else c.ljust(w)
                         for c, w, name in zip(cells, widths, COLUMNS)).rstrip()

    title = title_text(report)
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, line(COLUMNS), rule, *(line(r) for r in rows), rule]) + "\n"


def analysis_markdown(report: dict) -> str:
    out = [f"### {visible(report['name'])} (input {vol(report['input'])})", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["layers"]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row_cells(r)) + " |")
    out.append("")
    out.extend(f"- {line}" for line in totals_lines(report))
    for w in report["warnings"]:
        out.append(f"- warning: {visible(w)}")
    return "\n".join(out) + "\n"


CSV_FIELDS = ("index", "name", "type", "hyper", "input", "output", "params", "weights", "biases",
              "buffers", "macs", "flops", "activations", "rf_size", "rf_stride", "rf_start")


def analysis_csv(report: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in report["layers"]:
        writer.writerow([r["index"], visible(r["name"]), r["type"], visible(r["hyper"]),
                         vol(r["input"]),
                         vol(r["output"]), r["params"], r["weights"], r["biases"],
                         r["buffers"], r["macs"], r["flops"], r["activations"],
                         "x".join(map(str, r["rf"]["size"])),
                         "x".join(map(str, r["rf"]["stride"])),
                         "x".join(map(str, r["rf"]["start"]))])
    t = report["totals"]
    writer.writerow(["", "total", "", "", vol(report["input"]), vol(report["output"]),
                     t["params"], "", "", t["buffers"], t["macs"],
                     t["flops"], t["activations"], "", "", ""])
    return buf.getvalue()


def layers_table(rows: list[dict]) -> Table:
    """`cnncalc layers`: type, aliases, options (with their other spellings) and summary."""
    table = Table(title="layer types")
    for c in ("type", "aliases", "options", "what"):
        table.add_column(c)
    for r in rows:
        opt_text = ", ".join(
            o["name"] + (f" ({'/'.join(o['aliases'])})" if o["aliases"] else "")
            for o in r["options"])
        table.add_row(r["type"], ", ".join(r["aliases"]), opt_text, r["summary"])
    return table


def short_count(n: int) -> str:
    """A count in G, M or K (whichever keeps it >= 0.1), as the counting tools print theirs."""
    if n >= 1e8:
        return f"{n / 1e9:.2f} G"
    if n >= 1e5:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.2f} K"


def counted_lines(tool: str, help_line: str, counted, batch: int) -> list[str]:
    """`analyze --counts-like TOOL`: the totals as that tool prints them."""
    scope = f"for batch {batch}" if counted.per_batch else "per example"
    return [f"as {tool} would report it: params {num(counted.params)}; {counted.ops_name} "
            f"{num(counted.ops)} ({short_count(counted.ops)}) {scope}",
            f"  {tool} counts: {help_line}"]


def other_tools_line(others: dict) -> str | None:
    """The footer under the table: what the other tools would print, when it differs."""
    if not others:
        return None
    return "other tools would say: " + "; ".join(
        f"{tool} {short_count(c.ops)} {c.ops_name}" for tool, c in others.items()) + \
        " (--counts-like TOOL explains each)"
