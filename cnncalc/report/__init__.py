"""HTML reports: the architecture drawn as volumes, the analysis, receptive fields, and for a
checkpoint its training curves and confusion matrix; one self-contained file.

The package renders data only (the analysis dict, a checkpoint's contents, ``check``'s result)
and imports neither numba nor the engine at import time.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cnncalc.errors import DataError

from cnncalc.report.architecture import architecture_svg
from cnncalc.report.sources import ReportData, from_checkpoint, from_source, from_spec

__all__ = ["ReportData", "architecture_svg", "render", "write_report", "write_check_report",
           "write_checkpoint_report", "from_source", "from_spec", "from_checkpoint"]


def render(data: ReportData) -> str:
    """The HTML text of a report."""
    from cnncalc.report.page import render_page

    return render_page(data)


def _write(path, html: str) -> Path:
    """Write ``html`` to ``path`` through a temporary file, so a failed write leaves any old
    report whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DataError(f"cannot write the report {path}: {e.strerror or e}",
                        hint="choose a writable file with -o") from None
    return path


def write_report(source, out, **options) -> Path:
    """Write the report of a spec or checkpoint ``source`` to ``out``; options as
    :func:`from_source` (batch, optimizer, strict, convention, evaluate)."""
    return _write(out, render(from_source(source, **options)))


def write_checkpoint_report(checkpoint, out, evaluate: bool = True, tier=None) -> Path:
    """The report of a training checkpoint (what ``cnncalc train --out`` writes at the end;
    ``tier``: evaluate on that op tier, e.g. the NumPy tier a cold run ended on)."""
    return _write(out, render(from_checkpoint(checkpoint, evaluate=evaluate, tier=tier)))


def write_check_report(spec, result: dict, out, *, strict: bool = False,
                       convention: str | None = None) -> Path:
    """The report of ``spec`` led by ``check``'s marking table ``result``."""
    data = from_spec(spec, strict=strict, convention=convention)
    data.marking = result
    return _write(out, render(data))
