"""The sweep driver: trials fanned out over a Dask cluster, results gathered as they finish.

Where trials run: by default a ``LocalCluster`` of ``workers`` processes with one task thread
each, where ``workers x threads_per_trial <= cores``; with ``scheduler`` an existing cluster
(``dask scheduler`` + ``dask worker ... --nthreads 1``). Before the fan-out the driver builds the
spec's network once and runs a tiny forward/backward, so numba's kernel cache is written by one
process: workers then load it instead of compiling (and writing) the same kernels at once.

Methods (:data:`METHODS`): ``random`` draws ``trials`` configurations, ``grid`` takes every
combination of the dimensions' grid points, ``halving`` is asynchronous successive halving
(ASHA, Li et al. 2018): every configuration trains ``min_epochs`` first (rung 0); rung ``k`` is
``min_epochs * eta**k`` epochs, capped at ``epochs``; as soon as a trial finishes a rung, the
best ``floor(n_k / eta)`` of the ``n_k`` trials that finished rung ``k`` move up, resuming from
their own checkpoint. A trial stopped below the top rung is ``pruned``.

Reliability: a trial never raises (see :mod:`cnncalc.sweep.trial`); a worker process that dies
is restarted by its nanny and the scheduler reruns its task (up to Dask's
``distributed.scheduler.allowed-failures``), ``retries`` covers errors raised by the task
itself. ``results.csv``/``results.json`` are rewritten after every trial, so Ctrl-C keeps what
finished, and a second run with the same ``out`` reuses every trial whose ``result.json``
already reached the epochs asked for.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import logging
import os
import random
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncalc.jsonio import write_json
from cnncalc.registry import Param, Registry
from cnncalc.sweep.space import Dimension, SweepError, parse_params
from cnncalc.sweep.trial import TrialTask, load_result

__all__ = ["METHODS", "SweepConfig", "SweepResult", "require_dask", "run_sweep"]

def require_dask():
    """The ``distributed`` module, or a one-line error naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise SweepError('cnncalc sweep needs dask.distributed: pip install "cnncalc[sweep]"'
                         ) from None
    return distributed


def _random_configs(dims: list[Dimension], cfg: SweepConfig) -> list[dict]:
    rng = random.Random(cfg.sample_seed)
    return [{d.key: d.sample(rng) for d in dims} for _ in range(cfg.trials)]


def _grid_configs(dims: list[Dimension], cfg: SweepConfig) -> list[dict]:
    grids = [d.grid(cfg.grid_points) for d in dims]
    return [dict(zip((d.key for d in dims), values)) for values in itertools.product(*grids)]


#: the search methods: entry object ``configs(dims, cfg) -> [params]``; ``rungs`` says whether
#: trials stop early at rungs of successive halving
METHODS = Registry("sweep method", error=SweepError)
METHODS.add("random", _random_configs, rungs=False,
            params=(Param("trials", 8, "configurations drawn"),),
            help="configurations drawn at random from the ranges (Bergstra & Bengio 2012)")
METHODS.add("grid", _grid_configs, rungs=False,
            params=(Param("grid_points", 3, "points per log:/lin: range"),),
            help="every combination of the ranges' grid points")
METHODS.add("halving", _random_configs, rungs=True, aliases=("asha",),
            params=(Param("trials", 8, "configurations drawn"),
                    Param("eta", 3, "keep the best 1/eta at each rung"),
                    Param("min_epochs", 1, "epochs of rung 0")),
            help="asynchronous successive halving (ASHA) on the per-epoch test accuracy")


@dataclass
class SweepConfig:
    """A sweep's definition (see :func:`run_sweep`); ``fixed`` holds settings every trial
    shares (they win over the spec's ``train:``), ``params`` the ``--param`` texts."""

    spec: str | os.PathLike
    params: list[str]
    out: str | os.PathLike
    method: str = "random"
    trials: int = 8
    fixed: dict[str, Any] = field(default_factory=dict)
    grid_points: int = 3
    eta: int = 3
    min_epochs: int = 1
    sample_seed: int = 0
    workers: int | None = None
    threads_per_trial: int = 1
    scheduler: str | None = None
    retries: int = 2
    tensorboard: str | os.PathLike | None = None


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: ``status`` ``completed`` or ``interrupted``;
    ``records`` one dict per trial (``results.json``'s ``trials``), ``best`` the best of them
    (None when no trial finished); ``dims`` the parsed dimensions."""

    status: str
    records: list[dict]
    best: dict | None
    dims: list[Dimension]
    outputs: dict[str, str]
    epochs: int
    reused: int = 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a worker process: numba and every BLAS pool at ``threads`` (Dask's
    nanny sets the BLAS ones to 1 but leaves ``NUMBA_NUM_THREADS`` at the core count)."""
    n = str(threads)
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


def local_workers(cfg: SweepConfig) -> int:
    """Worker processes of the local cluster: ``cfg.workers`` or cores // threads per trial;
    more than the cores allow is an error."""
    cores = available_cores()
    threads = cfg.threads_per_trial
    workers = cfg.workers or max(1, cores // threads)
    if workers * threads > cores:
        raise SweepError(f"{workers} workers x {threads} threads per trial exceed the "
                         f"{cores} cores here", where="--workers",
                         hint=f"use at most {max(1, cores // threads)} workers")
    return workers


def _open_client(cfg: SweepConfig):
    """(client, cluster or None): a connection to ``cfg.scheduler`` or a new LocalCluster."""
    distributed = require_dask()
    if cfg.scheduler:
        try:
            return distributed.Client(cfg.scheduler, timeout="15s"), None
        except OSError as err:
            raise SweepError(f"cannot reach the Dask scheduler at {cfg.scheduler}: {err}",
                             hint="start it with `dask scheduler` and check the address"
                             ) from None
    workers, threads = local_workers(cfg), cfg.threads_per_trial
    with _sigint_ignored():   # Ctrl-C is the driver's to handle; workers inherit SIG_IGN
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           env=thread_env(threads), silence_logs=logging.ERROR)
    return distributed.Client(cluster), cluster


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while worker processes start (an ignored signal stays ignored across
    exec), so Ctrl-C in a terminal reaches only the driver, which then stops the cluster."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def warm_kernels(graph, dtypes: set[str]) -> None:
    """The calls of a training run (:func:`cnncalc.engine.warmup.warm_up`: a training step and
    an evaluation forward pass) on ``graph`` per dtype in this process, so numba's kernel cache
    is written once, here, and every trial's probe finds its kernels cached."""
    from cnncalc.engine.network import Network
    from cnncalc.engine.warmup import warm_up

    for dtype in sorted(dtypes):
        warm_up(Network(graph, dtype=dtype, parallel=False), 2)


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so stored and new params compare."""
    return json.loads(json.dumps(value))


class _Sweep:
    """The state of one run of the driver."""

    def __init__(self, cfg: SweepConfig, on_trial: Callable[[dict], None] | None):
        from cnncalc import load
        from cnncalc.train.settings import normalise_key, resolve

        self.cfg = cfg
        if not cfg.scheduler:
            local_workers(cfg)   # refuse an oversized cluster before any work
        self.on_trial = on_trial or (lambda record: None)
        self.method = METHODS.lookup(cfg.method)
        self.dims = parse_params(cfg.params)
        if not self.dims:
            raise SweepError("nothing to sweep", hint="add --param KEY=RANGE, e.g. "
                             "--param lr=log:1e-4:1e-1")
        self.spec_path = Path(cfg.spec)
        self.spec_text = self.spec_path.read_text()
        self.graph = load(self.spec_path)
        self.fixed = {normalise_key(k, "sweep options"): v for k, v in cfg.fixed.items()
                      if v is not None}
        both = sorted(set(self.fixed) & {d.key for d in self.dims})
        if both:
            raise SweepError(f"{', '.join(both)} is both swept (--param) and fixed",
                             hint="drop one of them")
        base = resolve((f"{self.spec_path} train:", self.graph.train),
                       ("sweep options", self.fixed))
        self.epochs = base.epochs
        if self.method.extra["rungs"] and "epochs" in {d.key for d in self.dims}:
            raise SweepError("halving sets each trial's epochs itself", where="--param epochs",
                             hint="give --epochs (the top rung) instead")
        self.rungs = self._rungs()
        if cfg.threads_per_trial == 1 and "parallel" not in self.fixed and \
                "parallel" not in {d.key for d in self.dims}:
            self.fixed["parallel"] = False   # one thread: serial kernels, reproducible
        self.configs = [_plain(c) for c in self.method.obj(self.dims, cfg)]
        width = max(3, len(str(len(self.configs) - 1)))
        self.ids = [f"{i:0{width}d}" for i in range(len(self.configs))]
        self.params = dict(zip(self.ids, self.configs))
        self.out = Path(cfg.out)
        self.dtypes = {str(c.get("dtype", base.dtype)) for c in self.configs}
        self.records: dict[str, dict] = {}
        self.reached: dict[str, int] = {}       # trial -> rung index reached
        self.rung_acc: list[dict[str, float]] = [{} for _ in self.rungs]
        self.promoted: list[set[str]] = [set() for _ in self.rungs]
        self.futures: dict[Any, tuple[str, int]] = {}
        self.reused = 0
        self.client = self.cluster = None
        self.token = uuid.uuid4().hex[:8]   # this run's task keys never meet an older run's

    def _rungs(self) -> list[int]:
        if not self.method.extra["rungs"]:
            return [self.epochs]
        eta, lo = self.cfg.eta, self.cfg.min_epochs
        if eta < 2 or lo < 1:
            raise SweepError(f"halving needs eta >= 2 and min_epochs >= 1; received eta {eta}, "
                             f"min_epochs {lo}", where="--eta/--min-epochs")
        rungs = []
        r = lo
        while r < self.epochs:
            rungs.append(r)
            r *= eta
        return [*rungs, self.epochs]

    # -- the sweep's identity (resume) -----------------------------------------------------------

    def definition(self) -> dict:
        return {"spec_sha256": hashlib.sha256(self.spec_text.encode()).hexdigest(),
                "method": self.method.name, "params": list(self.cfg.params),
                "fixed": _plain(self.fixed), "rungs": self.rungs,
                "trials": {i: self.params[i] for i in self.ids}}

    def check_folder(self) -> None:
        path = self.out / "sweep.json"
        mine = self.definition()
        if path.exists():
            try:
                theirs = json.loads(path.read_text())
            except ValueError:
                theirs = None
            if theirs != mine:
                raise SweepError(f"{self.out} holds a different sweep", where="--out",
                                 hint="use another --out, or the same command as before "
                                      "to resume")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(path, mine)

    # -- trials ----------------------------------------------------------------------------------

    def folder(self, trial: str) -> Path:
        return self.out / "trials" / trial

    def stored(self, trial: str, rung: int) -> dict | None:
        """The trial's earlier record when it already ran ``rungs[rung]`` epochs (or diverged)."""
        rec = load_result(self.folder(trial))
        if rec is None or _plain(rec.get("params")) != self.params[trial]:
            return None
        if rec["status"] == "diverged" or (rec["status"] == "completed"
                                           and rec["epochs"] >= self.rungs[rung]):
            return rec
        return None

    def ask(self, trial: str, rung: int) -> None:
        """Run ``trial`` up to rung ``rung`` (or reuse what its folder already holds)."""
        self.reached[trial] = rung
        rec = self.stored(trial, rung)
        if rec is not None:
            self.reused += 1
            self.tell(trial, rung, rec)
            return
        overrides = {**self.fixed, **self.params[trial], "epochs": self.rungs[rung]}
        task = TrialTask(trial, self.params[trial], self.spec_text, str(self.spec_path),
                         str(self.folder(trial).resolve()), overrides,
                         self.cfg.threads_per_trial,
                         str(Path(self.cfg.tensorboard) / trial) if self.cfg.tensorboard
                         else None)
        key = f"cnncalc-trial-{self.token}-{trial}-{rung}"
        if self.client is None:   # on the first trial to run: a resumed sweep with nothing
            warm_kernels(self.graph, self.dtypes)   # left compiles and starts nothing
            self.client, self.cluster = _open_client(self.cfg)
        fut = self.client.submit(task, key=key, pure=False, retries=self.cfg.retries,
                                 priority=rung)
        self.futures[fut] = (trial, rung)

    def tell(self, trial: str, rung: int, rec: dict) -> None:
        """Record a finished run of ``trial`` and promote whoever ranks high enough."""
        rec = dict(rec)
        if rec["status"] == "completed" and rec["epochs"] < self.epochs:
            rec["status"] = "pruned"
        self.records[trial] = rec
        self.on_trial(rec)
        self.write_results()
        if rec["status"] in ("completed", "pruned") and rung + 1 < len(self.rungs):
            curve = rec.get("curve") or []
            r = self.rungs[rung]
            acc = curve[r - 1] if len(curve) >= r and curve[r - 1] is not None \
                else rec.get("test_acc")
            self.rung_acc[rung][trial] = acc if acc is not None else float("-inf")
            self.promote(rung)

    def promote(self, rung: int) -> None:
        ranked = sorted(self.rung_acc[rung], key=lambda t: (-self.rung_acc[rung][t], t))
        for trial in ranked[:len(ranked) // self.cfg.eta]:
            if trial not in self.promoted[rung]:
                self.promoted[rung].add(trial)
                self.ask(trial, rung + 1)

    def collect(self) -> None:
        """Wait for the futures, recording each trial as it finishes (promotions add more)."""
        if not self.futures:   # everything was in the folder already
            return
        distributed = require_dask()
        pending = distributed.as_completed(list(self.futures))
        for fut in pending:
            trial, rung = self.futures.pop(fut)
            try:
                rec = fut.result()
            except Exception as err:   # the worker died too often (KilledWorker), or lost
                rec = {"id": trial, "params": self.params[trial], "status": "failed",
                       "epochs": 0, "test_acc": None, "best_test_acc": None, "loss": None,
                       "test_loss": None, "seconds": 0.0, "curve": [],
                       "message": f"{type(err).__name__}: {err}"}
            before = set(self.futures)
            self.tell(trial, rung, rec)
            for new in set(self.futures) - before:
                pending.add(new)

    # -- results -----------------------------------------------------------------------------------

    def ordered(self) -> list[dict]:
        return [self.records[i] for i in self.ids if i in self.records]

    def best(self) -> dict | None:
        done = [r for r in self.ordered() if r["status"] in ("completed", "pruned")
                and r.get("test_acc") is not None]
        if not done:
            return None
        top = max(r["epochs"] for r in done)
        return max((r for r in done if r["epochs"] == top),
                   key=lambda r: (r["test_acc"], -int(r["id"])))

    def write_results(self) -> None:
        keys = [d.key for d in self.dims]
        columns = ["id", *keys, "status", "test_acc", "best_test_acc", "loss", "test_loss",
                   "epochs", "seconds", "message"]
        tmp = self.out / ".results.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for rec in self.ordered():
                row = {k: rec.get(k) for k in columns}
                row.update({k: _cell(rec["params"].get(k)) for k in keys})
                w.writerow({k: "" if v is None else v for k, v in row.items()})
        os.replace(tmp, self.out / "results.csv")
        write_json(self.out / "results.json",
                   {"spec": str(self.spec_path), "sweep": self.definition(),
                    "trials": self.ordered(), "best": self.best()})


def _cell(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def run_sweep(cfg: SweepConfig, on_trial: Callable[[dict], None] | None = None) -> SweepResult:
    """Run (or resume) the sweep ``cfg``; ``on_trial(record)`` is called as each trial finishes.

    Raises
    ------
    SweepError / TrainError / SpecError
        Bad parameters, spec or options; a missing ``cnncalc[sweep]`` extra; an unreachable
        scheduler; an output folder that holds another sweep.
    """
    require_dask()
    sweep = _Sweep(cfg, on_trial)
    sweep.check_folder()
    status = "completed"
    try:
        for trial in sweep.ids:
            sweep.ask(trial, 0)
        sweep.collect()
    except KeyboardInterrupt:
        status = "interrupted"
        if sweep.client is not None:
            sweep.client.cancel(list(sweep.futures))
    finally:
        if sweep.records:
            sweep.write_results()
        if sweep.client is not None:
            sweep.client.close()
        if sweep.cluster is not None:
            sweep.cluster.close()
    outputs = {"results": str(sweep.out / "results.csv"),
               "json": str(sweep.out / "results.json")}
    if sweep.records:
        from cnncalc.sweep.plot import write_sweep_plot

        if write_sweep_plot(sweep.ordered(), sweep.dims, sweep.out / "sweep.png"):
            outputs["plot"] = str(sweep.out / "sweep.png")
    return SweepResult(status, sweep.ordered(), sweep.best(), sweep.dims, outputs,
                       sweep.epochs, sweep.reused)
