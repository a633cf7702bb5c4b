"""One table per named concept: the Python API, a spec's ``train:`` mapping and the command line
accept exactly the same names (canonical and aliases) with the same defaults, for every registry
``cnncalc train`` reads: optimizers, schedules, preprocessors and data sources."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import cnncalc
import cnncalc.train
from cnncalc import optim, schedules
from cnncalc.analysis import optimizer_state
from cnncalc.cli.app import app
from cnncalc.errors import DataError, SpecError, TrainError
from cnncalc.registry import REQUIRED
from cnncalc.train import data, preprocess
from cnncalc.train.settings import SETTINGS, TrainSettings, resolve

runner = CliRunner()

#: the settings key that names an entry of each registry
KEY_OF = {"optimizer": optim.OPTIMIZERS, "schedule": schedules.SCHEDULES,
          "preprocess": preprocess.PREPROCESSORS, "data": data.DATA_SOURCES}

#: what each data source needs after the colon to be a complete value
DATA_ARG = {"synthetic": "64", "mnist": "/nonexistent/mnist", "cifar10": "/nonexistent/cifar",
            "npz": "/nonexistent/x.npz"}

#: required schedule arguments, as a spec or command line would give them
SCHEDULE_ARGS = {"k": 0.1}


def spellings(key: str) -> list[tuple[str, str]]:
    """``(spelling, canonical)`` for every name and alias of the registry behind ``key``."""
    reg = KEY_OF[key]
    return [(s, e.name) for e in reg for s in (e.name, *e.aliases)]


ALL = [(key, s, name) for key in KEY_OF for s, name in spellings(key)]


def _value(key: str, spelling: str) -> str:
    return f"{spelling}:{DATA_ARG[data.DATA_SOURCES.canonical(spelling)]}" if key == "data" \
        else spelling


def _extra(key: str, name: str) -> dict:
    """Other settings a valid mapping needs with this name (a decay rate for exponential)."""
    if key != "schedule":
        return {}
    entry = schedules.SCHEDULES.lookup(name)
    return {k: v for k, v in SCHEDULE_ARGS.items() if k in entry.param_names}


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run ``cnncalc train`` up to the library call and keep the overrides it passes."""
    seen = {}

    def fake_run(spec, overrides, **kw):
        seen["overrides"] = overrides
        seen["settings"] = resolve(("command line", overrides))
        raise TrainError("stopped before training")

    monkeypatch.setattr(cnncalc.train, "run", fake_run)
    spec = tmp_path / "tiny.yaml"
    spec.write_text("input: 12x12x1\nlayers:\n  - flatten\n  - fc: {units: 4}\n")
    return seen, spec


@pytest.mark.parametrize(("key", "spelling", "name"), ALL)
def test_spec_and_command_line_accept_every_name_and_alias(key, spelling, name, captured,
                                                          tmp_path):
    seen, spec_file = captured
    value = _value(key, spelling)
    extra = _extra(key, name)
    # a spec's train: mapping, through the YAML loader
    yaml_extra = "".join(f", {k}: {v}" for k, v in extra.items())
    graph = cnncalc.load(f"input: 12x12x1\ntrain: {{{key}: '{value}'{yaml_extra}}}\n"
                         "layers:\n  - flatten\n  - fc: {units: 4}\n")
    from_spec = resolve(("spec train:", graph.train))
    # the command line
    args = ["train", str(spec_file), f"--{key}", value]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "stopped before training" in r.output, r.output
    from_cli = seen["settings"]
    if key == "data":
        assert from_spec.data == from_cli.data == value
        assert from_spec.data.partition(":")[0] == spelling
    else:
        assert getattr(from_spec, key) == getattr(from_cli, key) == name
    assert from_spec.to_dict() == from_cli.to_dict()


@pytest.mark.parametrize(("spelling", "name"), spellings("optimizer"))
def test_optimizer_defaults_agree_across_api_spec_and_checkpoint_config(spelling, name):
    entry = optim.OPTIMIZERS.lookup(name)
    api = optim.create(spelling)
    s = resolve(("spec", {"optimizer": spelling}))
    built = optim.create(s.optimizer, **s.optimizer_hyper())
    assert type(api) is type(built) is entry.obj
    assert api.get_config() == built.get_config()
    for p in entry.params:
        assert getattr(api, p.name) == p.default, p.name
    # the rate the schedule drives the run at is the optimizer's own default
    assert s.base_lr() == api.lr == entry.param("lr").default
    # the analyzer counts the optimizer's own state arrays
    assert optimizer_state(spelling) == (name, len(entry.obj.slots)) == (name,
                                                                        entry.extra["state"])


def test_rmsprop_runs_and_records_one_learning_rate(tmp_path):
    result = cnncalc.train.run("input: 12x12x1\nlayers:\n  - flatten\n  - fc: {units: 4}\n",
                               {"optimizer": "rms_prop", "epochs": 1, "batch_size": 64,
                                "data": "synthetic:64", "parallel": False},
                               out_dir=tmp_path)
    from cnncalc.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "last.npz")
    assert result.epochs[-1]["lr"] == ckpt.extra["optimizer_config"]["lr"] == 1e-3
    assert ckpt.schedule_state["config"]["lr"] == 1e-3
    assert set(result.outputs) >= {"metrics", "checkpoint", "best"}


@pytest.mark.parametrize(("spelling", "name"), spellings("schedule"))
def test_schedule_defaults_agree_across_api_and_settings(spelling, name):
    entry = schedules.SCHEDULES.lookup(name)
    required = {p.name: 10 if p.name == "total" else SCHEDULE_ARGS.get(p.name, 0.1)
                for p in entry.params if p.required and p.name != "lr"}
    if name == "step":   # one of step_size / milestones (settings would place milestones)
        required["step_size"] = 3
    given = {k: v for k, v in required.items() if k != "total"}
    s = resolve(("spec", {"schedule": spelling, "epochs": 1, **given}))
    kw = s.schedule_kwargs(steps_per_epoch=10)
    for p in entry.params:
        if p.name in ("lr", "warmup") or p.required or p.default is None:
            continue
        assert SETTINGS[p.name].default is None   # "the schedule's": no second default
        assert p.name not in kw                   # so create() applies the entry's own
    api = schedules.create(spelling, lr=s.base_lr(), **required)
    built = schedules.create(s.schedule, lr=s.base_lr(), **kw)
    assert type(api) is type(built) is entry.obj
    assert api(0) == built(0) == s.base_lr()


@pytest.mark.parametrize(("spelling", "name"), spellings("preprocess"))
def test_preprocessors_accept_every_name_in_the_api(spelling, name):
    x = np.random.default_rng(0).random((8, 1, 3, 3))
    assert type(preprocess.fit(spelling, x)) is preprocess.PREPROCESSORS.get(name)


@pytest.mark.parametrize(("spelling", "name"), spellings("data"))
def test_data_sources_accept_every_name_in_the_api(spelling, name):
    value = _value("data", spelling)
    if name == "synthetic":
        assert data.load(value).x_train.shape[0] == 64
        return
    with pytest.raises(DataError) as info:
        data.load(value, download=False)
    assert "unknown data source" not in info.value.message


def test_unknown_names_are_refused_alike_with_a_suggestion(captured):
    seen, spec_file = captured
    with pytest.raises(TrainError, match="unknown optimizer 'adamm'"):
        optim.create("adamm")
    with pytest.raises(TrainError, match="optimizer: unknown value 'adamm'") as info:
        resolve(("spec", {"optimizer": "adamm"}))
    assert "did you mean 'adam'?" in info.value.hint
    r = runner.invoke(app, ["train", str(spec_file), "--optimizer", "adamm"])
    assert r.exit_code == 2 and "did you mean 'adam'?" in r.output
    with pytest.raises(SpecError, match="unknown optimizer"):
        optimizer_state("adamm")
    with pytest.raises(TrainError, match="data: unknown data source"):
        resolve(("spec", {"data": "nosuch:thing"}))


def test_every_cli_setting_option_comes_from_a_declared_field():
    from cnncalc.cli.common import settings_options

    names = [p.name for p in settings_options()]
    assert names == list(SETTINGS)
    assert set(names) == {f for f in TrainSettings.__dataclass_fields__ if f != "sources"}
    for key, reg in KEY_OF.items():
        assert all(n in SETTINGS[key].metadata["setting"].help + ", ".join(reg.names())
                   for n in reg.names())


def test_defaults_declared_once():
    # a setting with a registry-given default is None ("the entry's") in TrainSettings
    for key, f in SETTINGS.items():
        if f.metadata["setting"].hyper_of is not None:
            assert f.default is None, key
    assert REQUIRED is schedules.SCHEDULES.lookup("cosine").param("total").default


def test_readme_settings_table_is_the_generated_one():
    from pathlib import Path

    from cnncalc.train.settings import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme


@pytest.mark.parametrize(("spelling", "name"), spellings("optimizer"))
def test_analyze_accepts_every_optimizer_name(spelling, name, specs_dir):
    import json

    r = runner.invoke(app, ["analyze", str(specs_dir / "lenet5.yaml"), "--format", "json",
                            "--optimizer", spelling])
    assert r.exit_code == 0, r.output
    training = json.loads(r.output)["totals"]["training"]
    entry = optim.OPTIMIZERS.lookup(name)
    assert training["optimizer"] == name
    assert training["optimizer_state_bytes"] == entry.extra["state"] * training["gradient_bytes"]


# -- inits: the engine's registry, read by the settings, a layer's init: and the command line --

from cnncalc.engine import init as inits  # noqa: E402


@pytest.mark.parametrize(("spelling", "name"),
                         [(s, e.name) for e in inits.INITS for s in (e.name, *e.aliases)])
def test_every_init_name_is_accepted_alike_by_api_spec_layer_and_command_line(
        spelling, name, captured):
    seen, spec_file = captured
    entry = inits.INITS.lookup(name)
    assert inits.parse_spec(spelling) == (name, {})
    # declared defaults are what the engine draws with
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    shape = (4, 3, 3, 3)
    np.testing.assert_array_equal(inits.initialize(spelling, shape, rng_a, np.float64),
                                  inits.initialize({"name": name, **entry.defaults()}, shape,
                                                   rng_b, np.float64))
    graph = cnncalc.load(f"input: 6x6x1\ntrain: {{init: '{spelling}'}}\nlayers:\n"
                         f"  - conv: {{filters: 2, size: 3, init: '{spelling}'}}\n"
                         "  - flatten\n  - fc: {units: 4}\n")
    from_spec = resolve(("spec train:", graph.train))
    r = runner.invoke(app, ["train", str(spec_file), "--init", spelling])
    assert r.exit_code == 2 and "stopped before training" in r.output, r.output
    assert from_spec.to_dict() == seen["settings"].to_dict()
    net = cnncalc.Network(graph, seed=0, dtype="float64", parallel=False)
    if name == "zeros":
        assert not net.params["conv1.weight"].any()
