"""The report page: one self-contained HTML file (inline CSS, SVG and a little JavaScript; no
network request). Everything is in the HTML as written; the script only sorts the table and
switches the receptive-field picture."""
from __future__ import annotations

import math

from cnncalc import __version__
from cnncalc.analysis import format_bytes
from cnncalc.report.architecture import ARCH_CSS, architecture_svg, legend_text
from cnncalc.report.filters import filters_section
from cnncalc.report.plots import (PLOT_CSS, confusion_svg, layer_bars, line_chart, memory_svg,
                                  receptive_field_svg)
from cnncalc.report.sources import ReportData
from cnncalc.report.svg import esc, shape_text

__all__ = ["render_page", "WIDE", "NARROW"]

#: Wrap widths of the two drawings; CSS shows the narrow one below 900 px.
WIDE, NARROW = 1200, 740

PAGE_CSS = """
:root{--ink:#1f2933;--muted:#52606d;--bg:#ffffff;--panel:#f5f7fa;--rule:#d9e2ec;
 --c1:#1c7ed6;--c2:#e8590c;--c3:#2b8a3e;--c4:#7048e8;--c5:#c2255c;--good:#2b8a3e;--bad:#c92a2a;
 color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--ink:#e4e7eb;--muted:#9aa5b1;--bg:#14181d;
 --panel:#1f262e;--rule:#323f4b;--c1:#4dabf7;--c2:#ff922b;--c3:#51cf66;--c4:#9775fa;
 --c5:#f06595;--good:#51cf66;--bad:#ff6b6b}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:12px 16px 40px}
h1{font-size:1.6em;margin:.4em 0 .1em}h2{font-size:1.2em;margin:1.6em 0 .5em;
 border-bottom:1px solid var(--rule);padding-bottom:.2em}
.sub{color:var(--muted);margin:0 0 .6em}
nav a{color:var(--c1);margin-right:1em;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px}
.card{background:var(--panel);border-radius:6px;padding:8px 10px}
.card b{display:block;font-size:1.25em}.card span{color:var(--muted);font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}
.arch-narrow{display:none}
@media (max-width:900px){.arch-wide{display:none}.arch-narrow{display:block}}
.legend{color:var(--muted);font-size:.9em}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid var(--rule);text-align:left;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th button{font:inherit;font-weight:600;color:inherit;background:none;border:0;padding:0;
 cursor:pointer}
th[aria-sort=ascending] button::after{content:" ▲"}
th[aria-sort=descending] button::after{content:" ▼"}
tr.warn td:first-child{box-shadow:inset 3px 0 var(--c2)}
.warnings li{color:var(--ink)}.warnings li::marker{content:"⚠ ";color:var(--c2)}
.rf-wrap{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.rf-info dt{color:var(--muted)}.rf-info dd{margin:0 0 .4em;font-weight:600}
select{font:inherit;max-width:100%}
.ok{color:var(--good);font-weight:600}.bad{color:var(--bad);font-weight:600}
code{font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.cnn-arch .node{cursor:pointer}
.confusion .cnum{font-size:11px}.confusion .strong{fill:#fff}
footer{color:var(--muted);font-size:.85em;margin-top:2em}
"""

SCRIPT = """
(function(){
  function sortBy(th){
    var table=th.closest('table'),idx=Array.prototype.indexOf.call(th.parentNode.children,th);
    var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
    table.querySelectorAll('th').forEach(function(t){t.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir);
    var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    var num=th.classList.contains('n');
    rows.sort(function(a,b){
      var x=a.cells[idx].getAttribute('data-v'),y=b.cells[idx].getAttribute('data-v');
      if(x===null){x=a.cells[idx].textContent;y=b.cells[idx].textContent;}
      var c=num?parseFloat(x)-parseFloat(y):x.localeCompare(y);
      if(c===0){c=a.rowIndex-b.rowIndex;}
      return dir==='ascending'?c:-c;});
    rows.forEach(function(r){body.appendChild(r);});
  }
  document.querySelectorAll('table.sortable th button').forEach(function(b){
    b.addEventListener('click',function(){sortBy(b.parentNode);});});
  var pick=document.getElementById('rf-layer');
  if(pick){
    var show=function(){
      var opt=pick.options[pick.selectedIndex];
      document.querySelectorAll('.rfgroup').forEach(function(g){
        g.style.display=g.id===opt.getAttribute('data-group')?'':'none';});
      ['size','stride','start','exceeds','warn'].forEach(function(k){
        var el=document.getElementById('rf-'+k);
        if(el){el.textContent=opt.getAttribute('data-'+k);}});
      document.querySelectorAll('.cnn-arch .node').forEach(function(n){
        var names=' '+n.getAttribute('data-layers')+' ';
        n.classList.toggle('sel',names.indexOf(' '+pick.value+' ')>=0);});
    };
    pick.addEventListener('change',show);
    document.querySelectorAll('.cnn-arch .node').forEach(function(n){
      n.addEventListener('click',function(){
        var names=n.getAttribute('data-layers').split(' '),last=names[names.length-1];
        if(last!=='input'){pick.value=last;show();
          document.getElementById('receptive-field').scrollIntoView({behavior:'smooth'});}});});
  }
})();
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _count(v) -> float:
    """A sortable number for a count that may be an int or a mapping of counts."""
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, dict):
        return sum(_count(x) for x in v.values())
    return 0


def _pair(p) -> str:
    return f"{p[1]}×{p[0]}" if p[0] != p[1] else f"{p[0]}×{p[0]}"


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def _summary(a: dict) -> str:
    t = a["totals"]
    cards = [
        _card(f"{t['params']:,}", f"parameters ({t['trainable_params']:,} trainable, "
                                  f"{t['non_trainable_params']:,} not)"),
        _card(f"{t['macs']:,}", "MACs per example"),
        _card(f"{t['flops']:,}", "FLOPs per example"),
        _card(f"{t['activations']:,}", "activations per example"),
        _card(format_bytes(t["param_bytes"]), "parameter memory (float32)"),
        _card(format_bytes(t["batch_bytes"]), f"activation memory, batch {t['batch']}"),
    ]
    if t.get("buffers") is not None:
        cards.append(_card(_fmt(t["buffers"]), "buffers"))
    if "training" in t:
        cards.append(_card(format_bytes(t["training"]["total_bytes"]),
                           f"training memory, {t['training']['optimizer']}, batch {t['batch']}"))
    return ('<section id="totals"><h2>Totals</h2>'
            f'<div class="cards">{"".join(cards)}</div></section>')


def _warnings(a: dict) -> str:
    items = list(a["warnings"])
    seen = set(items)
    for r in a["layers"]:
        for w in r["warnings"]:
            line = f"layer {r['index']} '{r['name']}' ({r['type']}): {w}"
            if line not in seen and not any(w in s for s in seen):
                items.append(line)
                seen.add(line)
    if not items:
        return '<section id="warnings"><h2>Warnings</h2><p>None.</p></section>'
    lis = "".join(f"<li>{esc(w)}</li>" for w in items)
    return f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{lis}</ul></section>'


def _architecture(a: dict) -> str:
    wide = architecture_svg(a, WIDE, prefix="w-", standalone=False)
    narrow = architecture_svg(a, NARROW, prefix="n-", standalone=False)
    return ('<section id="architecture"><h2>Architecture</h2>'
            f'<div class="scroll arch-wide">{wide}</div>'
            f'<div class="scroll arch-narrow">{narrow}</div>'
            f'<p class="legend">{esc(legend_text(a))} Click a volume to see its receptive '
            'field.</p></section>')


def _rf_attrs(r: dict, gid: str) -> dict:
    rf = r["rf"]
    return {"group": gid, "size": _pair(rf["size"]), "stride": _pair(rf["stride"]),
            "start": f"{rf['start'][1]}, {rf['start'][0]}",
            "exceeds": "yes: it covers padding" if r["rf_exceeds_input"] else "no",
            "warn": "; ".join(r["warnings"]) or "none"}


def _receptive_field(a: dict) -> str:
    rows = a["layers"]
    picture, ids = receptive_field_svg(a)
    opts = []
    for r, gid in zip(rows, ids):
        attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in _rf_attrs(r, gid).items())
        sel = " selected" if r is rows[-1] else ""
        opts.append(f'<option value="{esc(r["name"])}"{attrs}{sel}>{r["index"]}. '
                    f'{esc(r["name"])} ({esc(r["type"])})</option>')
    last = _rf_attrs(rows[-1], ids[-1])
    info = "".join(f'<dt>{label}</dt><dd id="rf-{k}">{esc(last[k])}</dd>' for k, label in (
        ("size", "field size (W×H)"), ("stride", "effective stride (jump)"),
        ("start", "centre of unit (0, 0) (x, y; negative: in the padding)"),
        ("exceeds", "larger than the input"), ("warn", "warnings (e.g. misaligned merge)")))
    return ('<section id="receptive-field"><h2>Receptive field</h2>'
            '<p><label for="rf-layer">Layer </label><select id="rf-layer">'
            f'{"".join(opts)}</select></p><div class="rf-wrap">{picture}'
            f'<dl class="rf-info">{info}</dl></div><p class="legend">Filled: the field of '
            'output unit (0, 0) on the input; dashed: the field of unit (1, 1), one effective '
            'stride further; dotted (merges): the field of each merged branch; the dashed frame is '
            'the padding the fields reach into.</p>'
            '</section>')


def _layer_table(a: dict) -> str:
    rows = a["layers"]
    has_buffers = any("buffers" in r for r in rows)
    cols = [("#", "n"), ("name", ""), ("type", ""), ("hyper-parameters", ""), ("inputs", ""),
            ("output W×H×D", "n"), ("params", "n"), ("MACs", "n"), ("FLOPs", "n"),
            ("activations", "n")]
    if has_buffers:
        cols.append(("buffers", "n"))
    cols += [("RF", "n"), ("eff. stride", "n"), ("RF centre", "n")]
    head = "".join(f'<th class="{c}" scope="col"><button type="button">{esc(h)}</button></th>'
                   for h, c in cols)
    body = []
    for r in rows:
        out = r["output"]
        rf = r["rf"]
        cells = [
            f'<td class="n" data-v="{r["index"]}">{r["index"]}</td>',
            f"<td>{esc(r['name'])}</td>", f"<td>{esc(r['type'])}</td>",
            f"<td>{esc(r['hyper'])}</td>", f"<td>{esc(', '.join(r['inputs']))}</td>",
            f'<td class="n" data-v="{out["width"] * out["height"] * out["depth"]}">'
            f"{shape_text(out)}</td>"]
        for key in ("params", "macs", "flops", "activations"):
            cells.append(f'<td class="n" data-v="{r[key]}">{r[key]:,}</td>')
        if has_buffers:
            b = r.get("buffers")
            cells.append(f'<td class="n" data-v="{_count(b)}">{esc(_fmt(b))}</td>')
        cells.append(f'<td class="n" data-v="{rf["size"][0] * rf["size"][1]}">'
                     f"{_pair(rf['size'])}</td>")
        cells.append(f'<td class="n" data-v="{rf["stride"][0]}">{_pair(rf["stride"])}</td>')
        cells.append(f'<td class="n" data-v="{rf["start"][0]}">'
                     f"{rf['start'][1]}, {rf['start'][0]}</td>")
        warn = ' class="warn"' if r["warnings"] else ""
        tip = f' title="{esc("; ".join(r["warnings"]))}"' if r["warnings"] else ""
        body.append(f"<tr{warn}{tip}>{''.join(cells)}</tr>")
    return ('<section id="layers"><h2>Layers</h2><p class="legend">Click a column heading to '
            'sort. Counts are per example.</p><div class="scroll"><table class="sortable" '
            f'id="layer-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div></section>")


def _costs(a: dict) -> str:
    return ('<section id="costs"><h2>Parameters and MACs per layer</h2>'
            f'<div class="scroll">{layer_bars(a["layers"])}</div></section>')


def _memory(a: dict) -> str:
    t = a["totals"]
    if "training" not in t:
        return ""
    tr = t["training"]
    return ('<section id="memory"><h2>Training memory</h2>'
            f'<p>Optimizer <b>{esc(tr["optimizer"])}</b>, batch <b>{t["batch"]}</b>: '
            f'<b>{format_bytes(tr["total_bytes"])}</b> (float32; parameters, gradients, '
            'optimizer state, and forward activations with their gradients).</p>'
            f'<div class="scroll">{memory_svg(tr)}</div></section>')


def _percent(v: float) -> str:
    return f"{v:.0%}"


def _training(run) -> str:
    rows = run.metrics
    parts = [f'<section id="training"><h2>Training run</h2><p class="sub">'
             f"{esc(run.path)}: epoch {run.epoch}</p>"]
    if rows:
        xs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]

        def col(key):
            return [r.get(key) for r in rows]

        charts = [line_chart("loss", xs, [("train", col("loss")), ("test", col("test_loss"))],
                             lambda v: f"{v:.3g}"),
                  line_chart("accuracy", xs, [("train", col("acc")), ("test", col("test_acc"))],
                             _percent),
                  line_chart("learning rate", xs, [("lr", col("lr"))], lambda v: f"{v:.3g}")]
        parts.append(f'<div class="charts">{"".join(charts)}</div>')
    else:
        parts.append("<p>The checkpoint holds no metrics.</p>")
    ev = run.evaluation
    if ev:
        parts.append(f'<h3>Test set ({esc(ev.get("data", ""))}, {ev["n"]:,} images)</h3>'
                     f'<p>accuracy <b>{ev["accuracy"]:.2%}</b>, loss <b>{ev["loss"]:.4f}</b></p>')
        if ev.get("confusion"):
            parts.append('<div class="scroll confusion">'
                         f'{confusion_svg(ev["confusion"], ev["classes"])}</div>')
    elif run.evaluation_note:
        parts.append(f"<p>{esc(run.evaluation_note)}</p>")
    settings = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td>"
        f"<td>{'set' if k in run.given else 'default'}</td></tr>"
        for k, v in run.settings.items())
    parts.append('<h3>Settings</h3><div class="scroll"><table id="settings"><thead><tr>'
                 "<th>setting</th><th>value</th><th>from</th></tr></thead>"
                 f"<tbody>{settings}</tbody></table></div></section>")
    return "".join(parts)


def _marking(m: dict) -> str:
    rows = []
    for r in m["results"]:
        mark = ('<span class="ok">✓ right</span>' if r["ok"]
                else '<span class="bad">✗ wrong</span>')
        worked = "<br>".join(f"<code>{esc(w)}</code>" for w in r["worked"])
        rows.append(f"<tr><td>{esc(r['layer'])}</td><td>{esc(r['quantity'])}</td>"
                    f"<td>{esc(r['written'])}</td><td>{esc(_fmt(r['correct']))}</td>"
                    f"<td>{mark}</td><td>{worked}</td></tr>")
    cls = "ok" if m["all_right"] else "bad"
    return (f'<section id="marking"><h2>Marking: <span class="{cls}">{esc(m["score"])}</span>'
            f"</h2><p class=\"sub\">answers {esc(m['answers'])}, {esc(m['convention'])} "
            'convention; each wrong claim shows the worked formula.</p><div class="scroll">'
            '<table id="marking-table"><thead><tr><th>layer</th><th>quantity</th>'
            "<th>answer</th><th>correct</th><th>mark</th><th>worked</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def render_page(data: ReportData) -> str:
    """The whole HTML document."""
    a = data.analysis
    sections = []
    if data.marking:
        sections.append(_marking(data.marking))
    sections += [_summary(a), _architecture(a), _receptive_field(a), _layer_table(a),
                 _costs(a), _memory(a)]
    if data.training:
        sections.append(_training(data.training))
    if data.filters:
        sections.append(filters_section(data.filters))
    sections.append(_warnings(a))
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("marking", "marking") if data.marking else ("", ""),
        ("architecture", "architecture"), ("receptive-field", "receptive field"),
        ("layers", "layers"), ("training", "training") if data.training else ("", ""),
        ("filters", "filters") if data.filters else ("", ""),
        ("warnings", "warnings")) if i)
    sub = (f"{esc(data.source)} · input {shape_text(a['input'])} → output "
           f"{shape_text(a['output'])} · {len(a['layers'])} layers · {esc(a['convention'])} "
           "convention")
    desc = f"<p>{esc(data.description)}</p>" if data.description else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>{esc(data.title)}: cnncalc report</title>"
            f"<style>{PAGE_CSS}{ARCH_CSS}{PLOT_CSS}</style></head><body><main>"
            f'<h1>{esc(data.title)}</h1><p class="sub">{sub}</p>{desc}<nav>{nav}</nav>'
            + "".join(sections)
            + f"<footer>Written by cnncalc {esc(__version__)}; one self-contained file, no "
              "network requests.</footer></main>"
              f"<script>{SCRIPT}</script></body></html>\n")
