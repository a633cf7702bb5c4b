"""Hostile and broken input beyond specs: checkpoints, data files, predict's arrays, the labs'
and the homework tools' numbers, and the memory budget. Every case goes through the CLI entry
point in-process and must end with exit code 2, a short message that says what is wrong and
where, and no traceback."""
from __future__ import annotations

import copy
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
