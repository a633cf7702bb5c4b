"""`cnncalc analyze` through typer's CliRunner: formats, the JSON contract, exit codes."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cnncalc.cli import app
from cnncalc.conventions import CONVENTIONS
from cnncalc.layers import LAYERS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_table_output(specs_dir):
    res = run("analyze", specs_dir / "lenet5.yaml")
    assert res.exit_code == 0, res.output
    assert "28x28x6" in res.output and "61,706" in res.output and "416,520" in res.output


def test_json_contract(specs_dir):
    res = run("analyze", specs_dir / "lecture_conv_32x32x3.yaml", "--format", "json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert {"name", "input", "layers", "totals"} <= set(data)
    assert data["input"] == {"width": 32, "height": 32, "depth": 3}
    (layer,) = data["layers"]
    assert {"name", "type", "input", "output", "params", "weights", "biases", "macs",
            "activations", "rf"} <= set(layer)
    assert layer["output"] == {"width": 32, "height": 32, "depth": 10}
    assert (layer["params"], layer["weights"], layer["biases"]) == (760, 750, 10)
    assert layer["rf"] == {"size": [5, 5], "stride": [1, 1], "start": [0, 0]}
    t = data["totals"]
    assert {"params", "trainable_params", "non_trainable_params", "macs", "activations",
            "bytes"} <= set(t)
    assert t["params"] == 760 and t["activations"] == 32 * 32 * 10
    assert t["bytes"] == 4 * (32 * 32 * 3 + 32 * 32 * 10)


def test_fc_output_is_1x1xN(specs_dir):
    data = json.loads(run("analyze", specs_dir / "lenet5.yaml", "-f", "json").stdout)
    assert data["layers"][-1]["output"] == {"width": 1, "height": 1, "depth": 10}
    assert data["layers"][6]["output"] == {"width": 1, "height": 1, "depth": 400}  # flatten


def test_batch_and_training_memory(specs_dir):
    data = json.loads(run("analyze", specs_dir / "lenet5.yaml", "-f", "json", "--batch", "64",
                          "--optimizer", "adam").stdout)
    t = data["totals"]
    assert t["batch_bytes"] == 64 * t["bytes"]
    tr = t["training"]
    assert tr["optimizer_state_bytes"] == 2 * 61706 * 4
    assert tr["gradient_bytes"] == 61706 * 4
    assert tr["total_bytes"] == (61706 * 4 * 4 + 2 * 64 * t["bytes"])
    sgd = json.loads(run("analyze", specs_dir / "lenet5.yaml", "-f", "json", "--optimizer",
                         "sgd").stdout)["totals"]["training"]
    assert sgd["optimizer_state_bytes"] == 0


def test_markdown_and_csv(specs_dir):
    md = run("analyze", specs_dir / "lenet5.yaml", "--format", "markdown").stdout
    assert md.splitlines()[2].startswith("| # | layer |")
    assert "| 1 | conv1 | conv | 6@5 s1 p2 | 28x28x1 | 28x28x6 | 156 |" in md
    csv_text = run("analyze", specs_dir / "lenet5.yaml", "--format", "csv").stdout
    lines = csv_text.splitlines()
    assert lines[0].startswith("index,name,type")
    assert lines[1].startswith("1,conv1,conv,6@5 s1 p2,28x28x1,28x28x6,156,150,6")
    assert lines[-1].split(",")[6] == "61706"


def test_warning_shown_and_strict_exit_2(specs_dir):
    res = run("analyze", specs_dir / "lecture_7x7_stride3.yaml")
    assert res.exit_code == 0
    assert "2.33" in res.output and "warning" in res.output
    res = run("analyze", specs_dir / "lecture_7x7_stride3.yaml", "--strict")
    assert res.exit_code == 2
    assert "2.33" in res.output and "Traceback" not in res.output
    res = run("analyze", specs_dir / "lecture_7x7_stride3.yaml", "--convention", "cs231n")
    assert res.exit_code == 2


def test_bad_spec_exit_2_with_location(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: 32x32x3\nlayers:\n  - conv: {filters: 6, sizes: 5}\n")
    res = run("analyze", bad)
    assert res.exit_code == 2
    assert "bad.yaml:3:24" in res.output and "did you mean 'size'" in res.output
    assert "^" in res.output  # the source line with a caret
    assert run("analyze", tmp_path / "missing.yaml").exit_code == 2


def test_layers_lists_registry():
    res = run("layers", "--format", "json")
    kinds = {r["type"] for r in json.loads(res.stdout)}
    assert {"conv", "maxpool", "fc", "batchnorm", "add", "concat", "lrn", "maxout"} <= kinds


def test_layers_rows_are_the_registry_entries():
    rows = json.loads(run("layers", "--format", "json").stdout)
    assert [r["type"] for r in rows] == sorted(LAYERS.names())
    for row in rows:
        entry = LAYERS.lookup(row["type"])
        assert row["aliases"] == list(entry.aliases) and row["summary"] == entry.help
        assert [o["name"] for o in row["options"]] == list(entry.obj.options)
        for o in row["options"]:
            param, option = entry.param(o["name"]), entry.obj.options[o["name"]]
            assert param.required == option.required and param.help == option.doc
            assert o["default"] == ("required" if option.required
                                    else f"default {option.default!r}")
    conv = next(r for r in rows if r["type"] == "conv")
    out_channels = next(o for o in conv["options"] if o["name"] == "out_channels")
    assert {"K", "filters"} <= set(out_channels["aliases"])
    assert out_channels["default"] == "required"


@pytest.mark.parametrize("name", CONVENTIONS.names())
def test_every_registered_convention_is_a_cli_choice(specs_dir, name):
    res = run("analyze", specs_dir / "lenet5.yaml", "--convention", name, "-f", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["convention"] == name
    assert name in run("analyze", "--help").output


@pytest.mark.parametrize("args", [["analyze", "resnet18.yaml"],
                                  ["analyze", "vgg16.yaml", "--optimizer", "adam"],
                                  ["analyze", "--help"]], ids=" ".join)
def test_analyze_never_imports_numba_numpy_or_the_trainer(specs_dir, args):
    """Start-up cost: analysing a spec loads neither the engine nor NumPy nor training code."""
    argv = [str(specs_dir / a) if a.endswith(".yaml") else a for a in args]
    heavy = ["numba", "numpy", "cnncalc.kernels", "cnncalc.engine", "cnncalc.train",
             "cnncalc.cli.train", "onnx", "cnncalc.onnx"]
    code = ("import sys; from cnncalc.cli import app; from typer.testing import CliRunner; "
            f"r = CliRunner().invoke(app, {argv!r}); "
            "assert r.exit_code == 0, r.output; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_command_table_matches_the_command_modules():
    """cli.app resolves each command through COMMAND_MODULES without importing the others."""
    from cnncalc.cli.app import COMMAND_MODULES, module_group

    defined = {name: module for module in set(COMMAND_MODULES.values())
               for name in ([module_group(module).name] if module_group(module).name
                            else module_group(module).commands)}
    assert defined == COMMAND_MODULES


def test_python_module_entry_point(specs_dir):
    out = subprocess.run([sys.executable, "-m", "cnncalc", "analyze",
                          str(specs_dir / "lecture_conv_32x32x3.yaml"), "-f", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert json.loads(out.stdout)["totals"]["params"] == 760


def test_python_api_matches_json(specs_dir):
    import cnncalc
    data = json.loads(run("analyze", specs_dir / "resnet18.yaml", "-f", "json").stdout)
    assert cnncalc.load(specs_dir / "resnet18.yaml").analyze() == data
