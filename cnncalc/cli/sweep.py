"""`cnncalc sweep`: many training runs of one spec on Dask (:func:`cnncalc.sweep.driver.run_sweep`).

Thin: every ``cnncalc train`` setting option is accepted here too (it fixes that setting for
all trials); ``--param`` names the swept ones. Trials are shown in a live table as they finish
(or as JSON lines), then the best configuration and the ``cnncalc train`` command that
reproduces it.
"""
from __future__ import annotations

import inspect
import shlex
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape

from cnncalc.cli.common import (TableOrJson, console, dumps_json, handle_errors, settings_options,
                                warn)
from cnncalc.sweep.driver import METHODS
from cnncalc.sweep.space import RANGES

#: this module's commands; cnncalc.cli.app adds them to the root application
commands = typer.Typer()


#: the --method choices, from the method registry
MethodName = Enum("MethodName", {name: name for name in METHODS.names()}, type=str)


def _method_help() -> str:
    return escape("; ".join(f"{e.name}: {e.help}" for e in METHODS) + ".")


def _range_help() -> str:
    forms = ", ".join(f"{e.name}:LOW:HIGH ({e.help})" for e in RANGES)
    return escape(f"KEY=RANGE; KEY is any train setting, RANGE one of {forms}, or a comma "
                  "list. Repeat for each setting.")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def train_command(spec: Path, settings: dict) -> str:
    """The ``cnncalc train`` command line that trains ``spec`` with ``settings``."""
    from cnncalc.train.settings import option_flags

    words = ["cnncalc", "train", str(spec)]
    for key, value in settings.items():
        flag = option_flags(key)[0]
        if "/" in flag:
            on, off = flag.split("/")
            words.append(on if value else off)
        else:
            words += [flag, ",".join(map(str, value)) if isinstance(value, list)
                      else str(value)]
    return shlex.join(words)


class TrialTable:
    """A rich table that grows by one row per finished trial (``rich.live``)."""

    def __init__(self, out, keys: list[str]):
        self.out, self.keys = out, keys
        self.rows: list[dict] = []
        self.live = None

    def render(self):
        from rich.table import Table

        t = Table(title=f"trials ({len(self.rows)} finished)")
        for c in ("id", *self.keys, "status", "test acc", "best", "epochs", "time (s)"):
            t.add_column(c, justify="left" if c in ("id", "status") else "right")
        for r in self.rows:
            style = {"diverged": "yellow", "failed": "red", "pruned": "dim"}.get(r["status"])
            t.add_row(r["id"], *[_fmt(r["params"].get(k)) for k in self.keys],
                      r["status"], _pct(r.get("test_acc")), _pct(r.get("best_test_acc")),
                      str(r.get("epochs", 0)), f"{r.get('seconds') or 0:.1f}", style=style)
        return t

    def __enter__(self):
        from rich.live import Live

        self.live = Live(self.render(), console=self.out, auto_refresh=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def __call__(self, record: dict) -> None:
        self.rows = [r for r in self.rows if r["id"] != record["id"]] + [record]
        self.rows.sort(key=lambda r: r["id"])
        self.live.update(self.render(), refresh=True)


def _emit(obj: dict) -> None:
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


def sweep(
    spec: Path = typer.Argument(..., help="YAML spec; its train: mapping fixes what is not "
                                "swept.", exists=True, dir_okay=False, show_default=False),
    param: list[str] = typer.Option(..., "--param", "-p", help=_range_help(),
                                    show_default=False),
    out: Path = typer.Option(..., "--out", help="Sweep folder: trials/<id>/, results.csv, "
                             "results.json, sweep.png. The same --out again resumes.",
                             file_okay=False, show_default=False),
    method: MethodName = typer.Option("random", "--method", help=_method_help()),
    trials: int = typer.Option(8, "--trials", "-n", min=1,
                               help="Configurations to draw (random, halving)."),
    grid_points: int = typer.Option(3, "--grid-points", min=1,
                                    help="Grid points per log:/lin: range (grid)."),
    eta: int = typer.Option(3, "--eta", min=2, help="halving: keep the best 1/eta per rung."),
    min_epochs: int = typer.Option(1, "--min-epochs", min=1,
                                   help="halving: epochs of the first rung."),
    sample_seed: int = typer.Option(0, "--sample-seed", min=0,
                                    help="Seed of the random draws of configurations."),
    workers: int = typer.Option(None, "--workers", "-w", min=1, help="Local worker processes "
                                "[default: cores // threads-per-trial]."),
    threads_per_trial: int = typer.Option(1, "--threads-per-trial", "-t", min=1,
                                          help="numba/BLAS threads of each trial."),
    scheduler: str = typer.Option(None, "--scheduler", help="Use a running Dask cluster, "
                                  "e.g. tcp://HOST:8786, instead of a local one."),
    tensorboard: Path = typer.Option(None, "--tensorboard", file_okay=False,
                                     help="TensorBoard event files, one folder per trial "
                                     "(needs cnncalc[tensorboard])."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f", help="table or json "
                                    "(JSON lines: one per trial, then end)."),
    **fixed,
):
    """Train many configurations of a spec on Dask and report the best."""
    from cnncalc.sweep.driver import SweepConfig, run_sweep

    if tensorboard is not None:
        from cnncalc.train.tensorboard import require_tensorboardx

        require_tensorboardx()
    cfg = SweepConfig(spec=spec, params=list(param), out=out,
                      method=MethodName(method).value, trials=trials,
                      fixed={k: v for k, v in fixed.items() if v is not None},
                      grid_points=grid_points, eta=eta, min_epochs=min_epochs,
                      sample_seed=sample_seed, workers=workers,
                      threads_per_trial=threads_per_trial, scheduler=scheduler,
                      tensorboard=str(tensorboard) if tensorboard else None)
    json_mode = fmt is TableOrJson.json
    out_console = console()
    if json_mode:
        result = run_sweep(cfg, on_trial=lambda rec: _emit({"event": "trial", **rec}))
    else:
        from cnncalc.sweep.space import parse_params

        keys = [d.key for d in parse_params(cfg.params)]
        with TrialTable(out_console, keys) as table:
            result = run_sweep(cfg, on_trial=table)
        out_console.print()
    best = result.best
    command = None
    if best is not None:
        from cnncalc.train.settings import resolve

        settings = resolve(("sweep", cfg.fixed), ("best trial", best["params"]))
        given = {k: v for k, v in settings.given().items() if k != "parallel"
                 or v is not False}
        command = train_command(spec, {**given, "epochs": result.epochs})
    if json_mode:
        _emit({"event": "end", "status": result.status, "trials": len(result.records),
               "reused": result.reused, "best": best, "command": command,
               "outputs": result.outputs})
    else:
        if best is not None:
            out_console.print(f"[bold]best: trial {best['id']}[/], test accuracy "
                              f"{best['test_acc']:.2%} after {best['epochs']} epochs: "
                              + ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items()))
            out_console.print(f"reproduce with: {command}")
        else:
            warn("no trial finished")
        if result.reused:
            out_console.print(f"{result.reused} trial runs reused from {out}")
        for what, path in result.outputs.items():
            out_console.print(f"{what}: {path}")
    if result.status == "interrupted":
        if not json_mode:
            warn(f"interrupted: finished trials are in {out}; run the same command to resume")
        raise typer.Exit(code=130)


_signature = inspect.signature(sweep)
sweep.__signature__ = _signature.replace(parameters=[
    *(p for p in _signature.parameters.values() if p.kind is not p.VAR_KEYWORD),
    *settings_options()])
commands.command("sweep")(handle_errors(sweep))
