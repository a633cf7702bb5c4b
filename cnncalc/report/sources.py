"""What a report shows, gathered as plain data from a spec or a training checkpoint.

Only data crosses into the page: the analysis dict (``Graph.analyze``), a checkpoint's metrics
rows and settings, an evaluation dict (``EvalResult.to_dict``) and ``check``'s result. The
engine is imported only to evaluate a checkpoint for its confusion matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncalc.errors import CnnCalcError

__all__ = ["ReportData", "TrainingRun", "from_spec", "from_checkpoint", "from_source",
           "CHECKPOINT_SUFFIXES"]

#: A SOURCE with one of these suffixes is a training checkpoint; anything else is a spec.
CHECKPOINT_SUFFIXES = (".npz",)


@dataclass
class TrainingRun:
    """A checkpoint's story: per-epoch metrics rows, the resolved settings (``given`` names the
    ones set explicitly), and the test-set evaluation or why there is none."""

    path: str
    epoch: int
    metrics: list[dict]
    settings: dict[str, Any]
    given: set[str] = field(default_factory=set)
    evaluation: dict | None = None
    evaluation_note: str | None = None


@dataclass
class ReportData:
    title: str
    source: str
    analysis: dict
    description: str = ""
    training: TrainingRun | None = None
    marking: dict | None = None
    filters: list | None = None   # FilterGrid per conv layer of a checkpoint


def _memory_choice(graph, batch: int | None, optimizer: str | None) -> tuple[int, str | None]:
    """Batch and optimizer for the memory estimate: given, else the spec's ``train:``, else
    batch 1 with plain SGD."""
    train = graph.train or {}
    batch = batch or train.get("batch_size") or 1
    optimizer = optimizer or train.get("optimizer") or "sgd"
    from cnncalc.optim import OPTIMIZERS

    return int(batch), optimizer if optimizer in OPTIMIZERS else "sgd"


def _description(graph) -> str:
    import yaml

    try:
        data = yaml.safe_load(graph.source) if graph.source else None
    except yaml.YAMLError:
        return ""
    text = data.get("description") if isinstance(data, dict) else None
    return str(text) if text else ""


def from_spec(source, *, batch: int | None = None, optimizer: str | None = None,
              strict: bool = False, convention: str | None = None) -> ReportData:
    from cnncalc import load

    graph = load(source, strict=strict, convention=convention)
    batch, optimizer = _memory_choice(graph, batch, optimizer)
    analysis = graph.analyze(batch=batch, optimizer=optimizer)
    return ReportData(title=graph.name or str(source), source=str(source), analysis=analysis,
                      description=_description(graph))


def from_checkpoint(path, *, batch: int | None = None, optimizer: str | None = None,
                    evaluate: bool = True, tier=None) -> ReportData:
    """A checkpoint's network, training curves, settings, conv filters and (when ``evaluate``
    and its data set can be loaded) its test-set confusion matrix, computed on ``tier``
    (:meth:`cnncalc.Network.use_tier`; None: the compiled kernels)."""
    from cnncalc import load
    from cnncalc.train.checkpoint import load_checkpoint
    from cnncalc.train.settings import resolve

    ckpt = load_checkpoint(path)
    graph = load(ckpt.spec_text)
    extra = ckpt.extra or {}
    settings = resolve(("checkpoint", extra.get("settings") or {}))
    batch, optimizer = _memory_choice(graph, batch or settings.batch_size,
                                      optimizer or settings.optimizer)
    run = TrainingRun(path=str(path), epoch=ckpt.epoch,
                      metrics=[dict(r) for r in ckpt.metrics or [] if isinstance(r, dict)],
                      settings=settings.to_dict(), given=set(settings.sources))
    if evaluate:
        run.evaluation, run.evaluation_note = _evaluate(path, settings, tier)
    else:
        run.evaluation_note = "not evaluated (--no-evaluate)"
    from cnncalc.report.filters import filter_grids

    return ReportData(title=graph.name or Path(path).stem, source=str(path),
                      analysis=graph.analyze(batch=batch, optimizer=optimizer),
                      description=_description(graph), training=run,
                      filters=filter_grids(graph, ckpt.params))


def _evaluate(path, settings, tier=None) -> tuple[dict | None, str | None]:
    """The checkpoint on its test split, as ``cnncalc evaluate`` computes it (imports the
    engine)."""
    from cnncalc.train import trainer as T
    from cnncalc.train.evaluate import evaluate, load_model

    try:
        model = load_model(path, tier)
        ds = T.load_data(settings, model.graph)
        T.check_compatible(model.graph, ds)
        if not len(ds.y_test):
            return None, f"the data set {settings.data} has no test split"
        res = evaluate(model.net, model.prepare(ds.x_test), ds.y_test,
                       settings.eval_batch_size, classes=ds.classes)
    except CnnCalcError as err:
        return None, f"no confusion matrix: {err.headline()}"
    out = res.to_dict()
    out["data"] = settings.data
    return out, None


def from_source(source, **options) -> ReportData:
    """A checkpoint when ``source`` ends in ``.npz``, else anything :func:`cnncalc.load`
    reads."""
    if str(source).lower().endswith(CHECKPOINT_SUFFIXES):
        return from_checkpoint(source, **{k: v for k, v in options.items()
                                          if k in ("batch", "optimizer", "evaluate")})
    return from_spec(source, **{k: v for k, v in options.items()
                                if k in ("batch", "optimizer", "strict", "convention")})
