"""Hostile and broken input beyond specs: checkpoints, data files, predict's arrays, the labs'
and the homework tools' numbers, and the memory budget. Every case goes through the CLI entry
point in-process and must end with exit code 2, a short message that says what is wrong and
where, and no traceback."""
from __future__ import annotations

import gzip
import json
import shutil
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncalc.cli.app import app

SPEC = """name: tiny
input: 8x8x1
layers:
  - conv: {filters: 2, size: 3}
  - batchnorm
  - relu
  - flatten
  - fc: {units: 3}
"""


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"{type(r.exception).__name__}: {r.exception}\n{r.output[-2000:]}"
    assert "Traceback" not in r.output
    return r


def refused(*args) -> str:
    """The command's output, after checking it exited 2 with a message of one screen."""
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert len(r.output) < 2000
    return " ".join(r.output.split())        # rich may wrap long paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A spec, a small npz data set and a checkpoint of one epoch trained on them."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "tiny.yaml").write_text(SPEC)
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.random((24, 1, 8, 8)).astype(np.float32),
             y=np.arange(24) % 3)
    r = cli("train", folder / "tiny.yaml", "--data", f"npz:{folder / 'd.npz'}", "--epochs", "1",
            "--batch-size", "8", "--out", folder / "run")
    assert r.exit_code == 0, r.output
    np.save(folder / "x.npy", rng.random((2, 1, 8, 8)).astype(np.float32))
    return folder


# ------------------------------------------------------------------------------------------------
# checkpoints


def _edit_meta(src, dst, edit):
    arrays = dict(np.load(src, allow_pickle=False))
    meta = json.loads(str(arrays["__meta__"]))
    text = edit(meta)
    arrays["__meta__"] = np.array(text if isinstance(text, str) else json.dumps(meta))
    np.savez(dst, **arrays)


def _set(path, value):
    def edit(meta):
        *parents, last = path
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def _delete(*path):
    def edit(meta):
        node = meta
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _nested(depth):
    def edit(meta):
        return json.dumps(meta)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return edit


BROKEN_META = {
    "extra-as-string": (_set(["trees", "extra"], "string"),
                        "field 'extra' must be a mapping or null; got 'string'"),
    "params-as-list": (_set(["trees", "params"], [1, 2]), "field 'params' must be a mapping"),
    "epoch-as-word": (_set(["epoch"], "ten"), "field 'epoch' must be an integer; got 'ten'"),
    "epoch-as-bool": (_set(["epoch"], True), "field 'epoch' must be an integer"),
    "negative-step": (_set(["step"], -5), "field 'step' must be in 0..9,007,199,254,740,992"),
    "spec-as-number": (_set(["spec_text"], 5), "field 'spec_text' must be a string; got 5"),
    "seed-as-word": (_set(["seed"], "x"), "field 'seed' must be an integer or null"),
    "metrics-as-word": (_set(["trees", "metrics"], "x"), "field 'metrics' must be a list"),
    "optimizer-as-list": (_set(["trees", "optimizer_state"], [1]),
                          "field 'optimizer_state' must be a mapping or null; got list"),
    "classes-as-word": (_set(["trees", "extra", "classes"], "abc"),
                        "field 'extra.classes' must be a list or null"),
    "batch-as-word": (_set(["trees", "extra", "batch"], "3"),
                      "field 'extra.batch' must be an integer"),
    "no-epoch": (_delete("epoch"), "lacks the field 'epoch'"),
    "no-trees": (_delete("trees"), "lacks the field 'trees'"),
    "no-buffers-tree": (_delete("trees", "buffers"), "lacks the field 'trees.buffers'"),
    "nested-500": (_nested(500), "metadata nests more than 64 levels"),
    "nested-100000": (_nested(100_000), "metadata nests more than 64 levels"),
}
COMMANDS = ["evaluate", "predict", "resume", "bn-fold"]


def _argv(command, ckpt, folder):
    return {"evaluate": ["evaluate", ckpt],
            "predict": ["predict", ckpt, folder / "x.npy"],
            "resume": ["train", "--resume", ckpt, "--epochs", "2", "--out",
                       folder / f"out-{ckpt.stem}"],
            "bn-fold": ["lab", "bn-fold", ckpt]}[command]


@pytest.mark.parametrize("case", sorted(BROKEN_META))
def test_checkpoint_schema_is_checked_on_load(run_dir, case):
    edit, expected = BROKEN_META[case]
    ckpt = run_dir / f"{case}.npz"
    _edit_meta(run_dir / "run" / "last.npz", ckpt, edit)
    for command in COMMANDS:
        out = refused(*_argv(command, ckpt, run_dir))
        assert f"checkpoint {ckpt}" in out and expected in out, (command, out)


def _npy_renamed(folder, ckpt):
    np.save(folder / "a.npy", np.zeros(3))
    shutil.move(folder / "a.npy", ckpt)


def _truncated(folder, ckpt):
    data = (folder / "run" / "last.npz").read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])


def _flipped(folder, ckpt):
    data = bytearray((folder / "run" / "last.npz").read_bytes())
    for i in range(200, len(data), 97):
        data[i] ^= 0xFF
    ckpt.write_bytes(bytes(data))


def _complex_weights(folder, ckpt):
    arrays = dict(np.load(folder / "run" / "last.npz", allow_pickle=False))
    arrays["params/conv1.weight"] = arrays["params/conv1.weight"].astype(np.complex64)
    np.savez(ckpt, **arrays)


BROKEN_FILES = {
    "npy-renamed": (_npy_renamed, "is a single .npy array, not a checkpoint"),
    "truncated": (_truncated, "cannot read checkpoint"),
    "corrupt": (_flipped, "cannot read checkpoint"),
    "empty": (lambda folder, ckpt: ckpt.write_bytes(b""), "not a .npz (zip) archive"),
    "complex-weights": (_complex_weights,
                        "params entry 'conv1.weight' must be a float array; got dtype complex64"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_checkpoint_files_name_the_file(run_dir, case):
    make, expected = BROKEN_FILES[case]
    ckpt = run_dir / f"file-{case}.npz"
    make(run_dir, ckpt)
    for command in COMMANDS:
        out = refused(*_argv(command, ckpt, run_dir))
        assert str(ckpt) in out and expected in out, (command, out)


def test_checkpoint_that_unpacks_past_the_memory_limit(run_dir, monkeypatch):
    monkeypatch.setenv("CNNCALC_MAX_MEMORY", "1K")
    out = refused("evaluate", run_dir / "run" / "last.npz")
    assert "over the memory limit of 1.00 KiB ($CNNCALC_MAX_MEMORY)" in out


def test_metrics_of_another_shape_cannot_be_resumed(run_dir):
    ckpt = run_dir / "metrics-mapping.npz"
    _edit_meta(run_dir / "run" / "last.npz", ckpt, _set(["trees", "metrics"], {"loss": [1]}))
    out = refused(*_argv("resume", ckpt, run_dir))
    assert f"checkpoint {ckpt}: field 'metrics' must be a list of per-epoch mappings" in out


def test_partial_progress_of_the_wrong_type_cannot_be_resumed(run_dir):
    ckpt = run_dir / "partial-words.npz"
    _edit_meta(run_dir / "run" / "last.npz", ckpt,
               _set(["trees", "extra", "partial"], {"seen": "many"}))
    out = refused(*_argv("resume", ckpt, run_dir))
    assert f"checkpoint {ckpt}: unreadable training progress" in out


# ------------------------------------------------------------------------------------------------
# numbers that drive a loop or an allocation: refused up front, naming the limit


#: command line -> the Bound (module, name) it must hit
BOUND_CASES = {
    "init-stats --depth": (["lab", "init-stats", "--depth", "100000000"],
                           ("labs.init_stats", "DEPTH")),
    "init-stats --width": (["lab", "init-stats", "--width", "1000000"],
                           ("labs.init_stats", "WIDTH")),
    "init-stats --n": (["lab", "init-stats", "--n", "1000000000"], ("labs.init_stats", "N")),
    "optimizers --steps": (["lab", "optimizers", "--steps", "100000000"],
                           ("labs.optimizers", "STEPS")),
    "schedules -T": (["lab", "schedules", "-T", "1000000000"], ("labs.schedules", "STEPS")),
    "equivariance --images": (["lab", "equivariance", "{spec}", "--images", "1000000"],
                              ("labs.equivariance", "IMAGES")),
    "equivariance --max-shift": (["lab", "equivariance", "{spec}", "--max-shift", "1000000000"],
                                 ("labs.equivariance", "MAX_SHIFT")),
    "bn-fold --images": (["lab", "bn-fold", "{spec}", "--images", "100000000"],
                         ("labs.bn_fold", "IMAGES")),
    "preprocess synthetic:N": (["lab", "preprocess", "--data", "synthetic:1000000000"],
                               ("train.data", "SYNTHETIC_N_BOUND")),
    "train synthetic:N": (["train", "{spec}", "--data", "synthetic:1000000000"],
                          ("train.data", "SYNTHETIC_N_BOUND")),
    "evaluate synthetic:N": (["evaluate", "{ckpt}", "--data", "synthetic:1000000000"],
                             ("train.data", "SYNTHETIC_N_BOUND")),
}


@pytest.mark.parametrize("case", sorted(BOUND_CASES))
def test_numbers_that_drive_loops_and_allocations_are_bounded(run_dir, case):
    import importlib

    argv, (module, name) = BOUND_CASES[case]
    argv = [a.format(spec=run_dir / "tiny.yaml", ckpt=run_dir / "run" / "last.npz") for a in argv]
    out = refused(*argv)
    bound = getattr(importlib.import_module(f"cnncalc.{module}"), name)
    assert f"{bound.name} must be in {bound.lo:,}..{bound.hi:,}; got" in out
    assert f"use at most {bound.hi:,}" in out


def test_lab_memory_is_estimated_before_allocating(monkeypatch):
    monkeypatch.setenv("CNNCALC_MAX_MEMORY", "64M")
    out = refused("lab", "init-stats", "--n", "100000", "--width", "1000")
    assert "lab init-stats needs about 16.61 GiB" in out
    assert "11 x 100,000 x 1,000 activations and gradients" in out
    assert "over the memory limit of 64.00 MiB ($CNNCALC_MAX_MEMORY)" in out


@pytest.mark.parametrize("setting,value,expected", [
    ("--epochs", "1000000000000", "epochs: must be at most 1,000,000; received 1000000000000"),
    ("--batch-size", "9" * 40, "batch_size: must be at most 2,147,483,647; received about 10^40"),
    ("--warmup", str(10**12), "warmup: must be at most 2,147,483,647"),
    ("--lr", "1e400", "lr: must be in [0, inf)"),
])
def test_train_settings_are_bounded(run_dir, setting, value, expected):
    out = refused("train", run_dir / "tiny.yaml", "--data", f"npz:{run_dir / 'd.npz'}",
                  setting, value)
    assert expected in out


def test_huge_integers_in_a_specs_train_settings(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + f"train: {{lr: {'9' * 400}, epochs: 2}}\n")
    assert "lr: must be in [0, inf)" in refused("train", spec)
    spec.write_text(SPEC + f"train: {{epochs: {'9' * 5000}}}\n")
    out = refused("train", spec)
    assert "epochs:" in out and len(out) < 600


def test_solve_search_bounds_are_counted_before_any_list_is_built():
    for option in ("--max-dilation", "--max-kernel"):
        r = cli("solve", "--input", str(2**31 - 1), "--output", "3", option, str(2**31 - 1),
                "--max-stride", "1000")
        assert r.exit_code == 2 and "the search bounds are too wide" in r.output, r.output


# ------------------------------------------------------------------------------------------------
# the memory budget: an estimate from the graph before anything is allocated


def test_train_refuses_a_network_over_the_memory_limit(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCALC_MAX_MEMORY", "16G")
    spec = tmp_path / "wide.yaml"
    spec.write_text("name: wide\ninput: 8x8x1\nlayers:\n  - conv: {filters: 1000000000, size: 3}"
                    "\n  - avgpool: {size: 6}\n  - flatten\n  - fc: {units: 3}\n")
    out = refused("train", spec, "--data", f"npz:{run_dir / 'd.npz'}", "--batch-size", "8")
    assert "training 'wide' needs about" in out
    assert "parameters 48.43 GiB, gradients 48.43 GiB, momentum state 48.43 GiB" in out
    assert "over the memory limit of 16.00 GiB ($CNNCALC_MAX_MEMORY)" in out
    assert "lower --batch-size" in out


def test_batch_activations_count_in_the_training_estimate(run_dir, tmp_path, monkeypatch):
    """The parameters fit; a batch of a 1024x1024 input's activations does not."""
    monkeypatch.setenv("CNNCALC_MAX_MEMORY", "32M")
    spec = tmp_path / "big-input.yaml"
    spec.write_text("name: big_input\ninput: 1024x1024x1\nlayers:\n"
                    "  - conv: {filters: 2, size: 3, stride: 1}\n  - maxpool: {size: 1022}\n"
                    "  - flatten\n  - fc: {units: 3}\n")
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 1, 1024, 1024), np.uint8), y=np.arange(4) % 3)
    out = refused("train", spec, "--data", f"npz:{tmp_path / 'big.npz'}", "--batch-size", "16")
    assert "training 'big_input' needs about 71.81 MiB (parameters 116 B" in out
    assert "activations of 3 and their gradients 71.81 MiB" in out


def test_network_refuses_parameters_over_the_memory_limit(monkeypatch):
    from cnncalc.engine.network import Network
    from cnncalc.errors import LimitError

    monkeypatch.setenv("CNNCALC_MAX_MEMORY", "1M")
    with pytest.raises(LimitError, match=r"network 'n' needs about 7\.6\d MiB \(parameters"):
        Network("name: n\ninput: 1x1x1000\nlayers:\n  - fc: {units: 1000}\n")


@pytest.mark.parametrize("text", ["abc", "0", "-5G", "1e30T", "nan"])
def test_a_bad_memory_limit_is_named(monkeypatch, text):
    from cnncalc.limits import memory_budget
    from cnncalc.errors import LimitError

    monkeypatch.setenv("CNNCALC_MAX_MEMORY", text)
    with pytest.raises(LimitError, match=r"\$CNNCALC_MAX_MEMORY must be a positive size"):
        memory_budget()


@pytest.mark.parametrize("text,expected", [("512M", 512 << 20), ("8G", 8 << 30),
                                           ("2GiB", 2 << 30), ("1.5K", 1536), ("4096", 4096)])
def test_memory_limit_spellings(monkeypatch, text, expected):
    from cnncalc.limits import memory_budget

    monkeypatch.setenv("CNNCALC_MAX_MEMORY", text)
    assert memory_budget() == expected


def test_default_memory_limit_is_a_share_of_physical_memory(monkeypatch):
    from cnncalc import limits

    monkeypatch.delenv("CNNCALC_MAX_MEMORY", raising=False)
    monkeypatch.setattr(limits, "physical_memory", lambda: 64 << 30)
    assert limits.memory_budget() == int((64 << 30) * limits.DEFAULT_MEMORY_FRACTION)


# ------------------------------------------------------------------------------------------------
# data files


def _idx(dims, data=b""):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def _mnist(folder, images=None):
    folder.mkdir(exist_ok=True)
    names = {"train-images-idx3-ubyte": _idx([4, 28, 28], bytes(4 * 784)),
             "train-labels-idx1-ubyte": _idx([4], bytes([1, 2, 3, 4])),
             "t10k-images-idx3-ubyte": _idx([4, 28, 28], bytes(4 * 784)),
             "t10k-labels-idx1-ubyte": _idx([4], bytes([1, 2, 3, 4]))}
    for name, data in names.items():
        (folder / name).write_bytes(data)
    if images is not None:
        (folder / "train-images-idx3-ubyte").unlink()
        images(folder / "train-images-idx3-ubyte")
    return folder


def _gzip_bomb(path, claimed=(4, 28, 28), zeros=64 << 20):
    """A gzipped IDX file whose data unpacks far past what its header claims."""
    with gzip.open(str(path) + ".gz", "wb", compresslevel=9) as f:
        f.write(_idx(list(claimed)))
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(chunk)


def _mnist_spec(tmp_path):
    spec = tmp_path / "mnist.yaml"
    spec.write_text("name: m\ninput: 28x28x1\nlayers:\n  - flatten\n  - fc: {units: 10}\n")
    return spec


@pytest.mark.parametrize("case,make,expected", [
    ("overflowing-dims", lambda p: p.write_bytes(_idx([2**32 - 1] * 3, b"x" * 100)),
     "its header claims 79,228,162,458,924,105,385,300,197,375 bytes of data; cnncalc reads "
     "IDX files of up to 2,147,483,648 bytes"),
    ("claims-more-than-held", lambda p: p.write_bytes(_idx([4, 28, 28], bytes(100))),
     "header says shape (4, 28, 28) (3,136 bytes of data), file has 100"),
    ("longer-than-claimed", lambda p: p.write_bytes(_idx([4, 28, 28], bytes(4 * 784 + 9))),
     "(3,136 bytes of data), file has 3,137 or more"),
    ("gzip-bomb", _gzip_bomb, "(3,136 bytes of data), file has 3,137 or more"),
    ("gzip-bomb-claiming-gigabytes", lambda p: _gzip_bomb(p, (60000 * 100, 28, 28), 1 << 20),
     "its header claims 4,704,000,000 bytes of data"),
    ("corrupt-gzip", lambda p: (p.parent / (p.name + ".gz")).write_bytes(b"\x1f\x8b" + b"x" * 50),
     "cannot read"),
])
def test_broken_idx_files_are_refused_by_their_header(tmp_path, case, make, expected):
    folder = _mnist(tmp_path / "mnist", make)
    out = refused("train", _mnist_spec(tmp_path), "--data", f"mnist:{folder}")
    assert "train-images-idx3-ubyte" in out and expected in out


def test_gzip_bomb_is_never_unpacked(tmp_path, monkeypatch):
    """Reading stops one byte past the header's claim, whatever the stream holds."""
    from cnncalc.train import data

    _gzip_bomb(tmp_path / "images-idx3-ubyte", zeros=32 << 20)
    read = []
    real_open = gzip.open

    def spy(*args, **kw):
        f = real_open(*args, **kw)
        original = f.read
        f.read = lambda n=-1: read.append(n) or original(n)
        return f

    monkeypatch.setattr(data.gzip, "open", spy)
    with pytest.raises(data.DataError, match="or more"):
        data.read_idx(tmp_path / "images-idx3-ubyte.gz")
    assert -1 not in read and sum(read) <= 16 + 4 * 784 + 1


@pytest.mark.parametrize("arrays,expected", [
    ({"images": np.zeros((4, 1, 8, 8)), "y": np.arange(4)}, "has no array 'x' (has: images, y)"),
    ({"x": np.zeros((4, 8)), "y": np.arange(4)}, "'x' must be (N, C, H, W) or (N, H, W)"),
    ({"x": np.array(["a"] * 4 * 64).reshape(4, 1, 8, 8), "y": np.arange(4)},
     "'x' must be numeric; got dtype <U1"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.arange(5)}, "'y' must have shape (4,)"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.array([0, 1, -1, 2])}, "'y' has negative labels"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.array([0.5, 1, 1, 2])},
     "'y' must hold integer class indices"),
    ({"x": np.zeros((6, 1, 8, 8)), "y": np.array([0, 1, 2, 0, 1, 7])},
     "the spec's last layer 'fc1' has 3 outputs but bad has 8 classes"),
])
def test_npz_data_with_wrong_keys_dtypes_shapes_labels(run_dir, tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    out = refused("train", run_dir / "tiny.yaml", "--data", f"npz:{tmp_path / 'bad.npz'}",
                  "--out", tmp_path / "run")
    assert expected in out, out


# ------------------------------------------------------------------------------------------------
# predict's inputs


@pytest.mark.parametrize("array,expected", [
    (np.zeros((0, 1, 8, 8), np.float32), "holds no images (an array of shape (0, 1, 8, 8))"),
    (np.zeros((0, 8, 8), np.float32), "holds no images"),
    (np.zeros(5, np.float32), "array of shape (5,) does not fit the network's input 8x8x1"),
    (np.zeros((1, 1, 1, 8, 8), np.float32), "array of shape (1, 1, 1, 8, 8) does not fit"),
    (np.float32(3), "array of shape () does not fit"),
    (np.full((1, 1, 8, 8), np.nan, np.float32), "holds nan at index [0, 0, 0, 0]"),
    (np.zeros((1, 1, 8, 8), np.complex64), "images must be numeric; got dtype complex64"),
])
def test_predict_on_empty_wrong_rank_and_nan_arrays(run_dir, tmp_path, array, expected):
    path = tmp_path / "in.npy"
    np.save(path, array)
    out = refused("predict", run_dir / "run" / "last.npz", path)
    assert f"{path}" in out and expected in out


# ------------------------------------------------------------------------------------------------
# conv, check and explain


@pytest.mark.parametrize("a,b,expected", [
    ("1,2;3,4|1,2;3", "1,1", "input (depth slice 2) is ragged: row 1 has 2 values, row 2 has 1"),
    ("1,2;3,4|1,2", "1", "input: depth slices differ in size (1x2, 2x2)"),
    ("1,2;3,4", "1,1|1,1;1,1", "kernel: depth slices differ in size (1x2, 2x2)"),
    ("1,2;3,4|5,6;7,8", "1,1;1,1|1,1;1", "kernel (depth slice 2) is ragged"),
    ("1,2;3,4|5,6;7,8", "1,1;1,1|1,1;1,1|1,1;1,1", "depth"),
    ("[[[1,2],[3,4]],[[1,2],[3]]]", "1", "ragged"),
])
def test_conv_with_ragged_depth_slices_names_the_slice(a, b, expected):
    assert expected in refused("conv", a, b)


def test_unicode_digits_in_check_and_explain(run_dir, tmp_path):
    answers = tmp_path / "a.yaml"
    answers.write_text('layers:\n  conv1: {output: "6x6x³", params: ³}\n')
    out = refused("check", run_dir / "tiny.yaml", answers)
    assert f"{answers}:2:" in out and "expected a number, got '³'" in out
    out = refused("explain", run_dir / "tiny.yaml", "--layer", "³")
    assert "the spec has no layer '³'" in out


# ------------------------------------------------------------------------------------------------
# big specs: refused from the parser's stream, before composing and building


def test_a_spec_with_too_many_written_values_is_refused_while_parsing(tmp_path, monkeypatch):
    from cnncalc.spec import loader

    monkeypatch.setattr(loader, "MAX_WRITTEN_VALUES", 1000)
    spec = tmp_path / "wide.yaml"
    spec.write_text("{name: w, input: 8x8x1, layers: [" + "relu, " * 2000 + "relu]}\n")
    out = refused("analyze", spec)
    assert "the spec has more than 1,000 values" in out and f"{spec}:1:" in out


def test_a_written_out_spec_below_the_value_limit_still_loads(monkeypatch):
    import cnncalc
    from cnncalc.spec import loader

    monkeypatch.setattr(loader, "MAX_WRITTEN_VALUES", 1000)
    text = "name: w\ninput: 4x4x1\nlayers:\n" + "  - relu\n" * 990
    assert len(cnncalc.load(text).nodes) == 990


@pytest.mark.parametrize("where", ["network", "layer"])
def test_names_are_bounded(tmp_path, where):
    from cnncalc.spec.schema import MAX_NAME_LENGTH

    long = "n" * (MAX_NAME_LENGTH + 1)
    spec = tmp_path / "s.yaml"
    if where == "network":
        spec.write_text(f"name: {long}\ninput: 8x8x1\nlayers: [relu]\n")
    else:
        spec.write_text(f"name: s\ninput: 8x8x1\nlayers:\n  - relu: {{name: {long}}}\n")
    out = refused("analyze", spec)
    assert f"the name is {MAX_NAME_LENGTH + 1} characters long; a name may have at most " \
           f"{MAX_NAME_LENGTH}" in out
    assert f"{spec}:{1 if where == 'network' else 4}:" in out


@pytest.mark.parametrize("text", ["name: x\ninput: 8x8x1\nlayers: [relu,\n",
                                  "name: x\n  input: 8x8x1\nlayers: [relu]\n",
                                  "name: x\ninput: 8x8x1\nlayers:\n  - conv: {filters: 2\n"])
def test_syntax_errors_read_as_with_pyyamls_own_parser(monkeypatch, text):
    """libyaml parses; a small erroneous spec is re-read by PyYAML's parser for its message."""
    import yaml

    import cnncalc
    from cnncalc.errors import SpecError
    from cnncalc.spec import loader

    def message(fast):
        monkeypatch.setattr(loader, "FAST_LOADER", fast)
        with pytest.raises(SpecError) as e:
            cnncalc.load(text)
        return str(e.value)

    assert message(yaml.CSafeLoader) == message(yaml.SafeLoader)



def test_readme_states_the_declared_limits():
    import importlib
    from pathlib import Path

    from cnncalc import limits
    from cnncalc.spec import loader, schema
    from cnncalc.train import checkpoint, data, settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Limits"):readme.index("## Shipped specs")]
    for _, (module, name) in BOUND_CASES.values():
        bound = getattr(importlib.import_module(f"cnncalc.{module}"), name)
        assert bound.name.split("/")[0] in section and f"{bound.lo:,}..{bound.hi:,}" in section, \
            bound
    assert f"1..{settings.MAX_EPOCHS:,}" in section
    assert f"up to {data.IDX_MAX_BYTES:,} bytes" in section
    assert f"nesting up to {checkpoint.MAX_META_DEPTH} levels" in section
    assert f"{limits.DEFAULT_MEMORY_FRACTION:.0%} of the machine's physical memory" in section
    assert limits.MEMORY_ENV in section
    assert f"more\nthan {loader.MAX_WRITTEN_VALUES:,} written values" in readme
    assert f"names longer than {schema.MAX_NAME_LENGTH} characters" in readme
