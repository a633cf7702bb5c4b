"""Security: nothing cnncalc reads can run code (a planted pickle proves it on every entry point)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncalc.cli.app import app
from cnncalc.errors import DataError
from cnncalc.train.data import CIFAR_RECORD, load, load_cifar10

runner = CliRunner()

CIFAR_SPEC = """name: tiny_cifar
input: 32x32x3
train: {{epochs: 1, batch_size: 8, data: "cifar10:{data}"}}
layers:
  - conv: {{filters: 2, size: 3, stride: 4}}
  - relu
  - flatten
  - fc: {{units: 10}}
"""
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _Planted:
    """Pickles to a call of ``os.system`` that would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant_malicious_cifar(folder, marker):
    """The python-version batch names, each a pickle that runs a shell command when loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in BATCHES + ["batches.meta"]:
        payload = {b"data": _Planted(marker), b"labels": [0]}
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))


def write_cifar_bin(folder, n=8, seed=0):
    """A tiny binary-version CIFAR-10 set: records of one label byte then 3072 pixel bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in BATCHES:
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / f"{name}.bin").write_bytes(np.column_stack([labels, pixels]).tobytes())
        out[name] = (labels, pixels)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return out


def test_planted_pickle_is_refused_by_the_loader(tmp_path):
    marker = tmp_path / "pwned"
    plant_malicious_cifar(tmp_path / "cifar", marker)
    with pytest.raises(DataError, match=r"refused to load global '(posix|os|nt)\.system'"):
        load_cifar10(tmp_path / "cifar")
    assert not marker.exists()
    # the control: the same pickle through plain pickle.loads does run (the test can fail)
    pickle.loads((tmp_path / "cifar" / "data_batch_1").read_bytes())
    assert marker.exists()


def test_planted_pickle_cannot_run_from_cli_or_spec(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    plant_malicious_cifar(evil, marker)
    spec = tmp_path / "spec.yaml"
    spec.write_text(CIFAR_SPEC.format(data=evil))
    r = runner.invoke(app, ["train", str(spec), "--data", f"cifar10:{evil}"])
    assert r.exit_code == 2 and "refused to load global" in r.output, r.output
    r = runner.invoke(app, ["train", str(spec)])  # the spec's train: data names the folder
    assert r.exit_code == 2 and "refused to load global" in r.output, r.output
    assert not marker.exists()


def test_planted_pickle_cannot_run_from_a_checkpoint(tmp_path):
    """evaluate and --resume re-read the data a checkpoint's settings name: still no code."""
    marker = tmp_path / "pwned"
    data_dir = tmp_path / "cifar"
    write_cifar_bin(data_dir)
    spec = tmp_path / "spec.yaml"
    spec.write_text(CIFAR_SPEC.format(data=data_dir))
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(spec), "--out", str(out), "--deterministic"])
    assert r.exit_code == 0, r.output
    # swap the benign binary set for a malicious python-version one in the same folder
    for f in data_dir.iterdir():
        f.unlink()
    plant_malicious_cifar(data_dir, marker)
    r = runner.invoke(app, ["evaluate", str(out / "last.npz")])
    assert r.exit_code == 2 and "refused to load global" in r.output, r.output
    r = runner.invoke(app, ["train", "--resume", str(out / "last.npz"), "--epochs", "2"])
    assert r.exit_code == 2 and "refused to load global" in r.output, r.output
    assert not marker.exists()


def test_cifar_binary_version(tmp_path):
    written = write_cifar_bin(tmp_path / "cifar-10-batches-bin", n=3)
    d = load(f"cifar10:{tmp_path}")  # the parent folder is found too
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    labels, pixels = written["data_batch_2"]
    np.testing.assert_array_equal(d.y_train[3:6], labels)
    # pixel k of a record is plane k // 1024 (R, G, B), row (k % 1024) // 32, column k % 32
    np.testing.assert_array_equal(d.x_train[4, 1, 2, 5], np.float32(pixels[1, 1024 + 2 * 32 + 5]) / 255)
    assert d.classes == [f"class{i}" for i in range(10)]


def test_cifar_binary_damage_is_named(tmp_path):
    write_cifar_bin(tmp_path)
    with open(tmp_path / "data_batch_3.bin", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match=rf"data_batch_3.bin: {CIFAR_RECORD * 8 + 1} bytes"):
        load_cifar10(tmp_path)
    write_cifar_bin(tmp_path)
    raw = bytearray((tmp_path / "test_batch.bin").read_bytes())
    raw[2 * CIFAR_RECORD] = 12
    (tmp_path / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="test_batch.bin: label 12 at index 2 is outside 0..9"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_official_python_batches_still_load(tmp_path, protocol):
    """The restricted unpickler admits what real batches hold: arrays, lists, bytes, ints."""
    rng = np.random.default_rng(1)
    for name in BATCHES:
        batch = {b"batch_label": b"training batch", b"data": rng.integers(0, 256, (2, 3072),
                                                                            dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 2)],
                 b"filenames": [b"a.png", b"b.png"]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    names = [f"n{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=protocol))
    d = load_cifar10(tmp_path)
    assert d.x_train.shape == (10, 3, 32, 32) and d.classes[3] == "n3"


def test_json_output_is_strict_json(capsys):
    """NaN and infinity are not JSON: every --format json output writes null instead."""
    import json
    import math

    from cnncalc.cli.common import print_json

    print_json({"loss": float("nan"), "ratio": [np.float32("inf"), -math.inf, 0.5],
                "array": np.array([1.0, np.nan]), "n": np.int64(3)})
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "ratio": [None, None, 0.5], "array": [1.0, None],
                                "n": 3}


# -- terminal and markup injection -------------------------------------------------------------

HOSTILE_SPEC = r'''name: "evil\e[2J\e]0;owned\anet"
input: 8x8x1
layers:
  - conv: {name: "[/bold]", filters: 2, size: 3}
  - relu: {name: "[link=https://example.com]click[/link]"}
  - conv: {name: "x\e[1A\rall tests passed", filters: 2, size: 2, stride: 2}
  - flatten
  - fc: {units: 3}
'''
HOSTILE_ANSWERS = r'''layers:
  "[/bold]": {output: "6x6x2", params: 20}
  "x\e[1A\rall tests passed": {output: "3x3x2"}
'''


def assert_inert(text: str) -> None:
    """No raw control character reaches the terminal; rich markup came out literally."""
    assert "\x1b" not in text and "\a" not in text and "\r" not in text
    assert "\\x1b" in text  # shown visibly instead


@pytest.mark.parametrize("args", [
    ["analyze", "{spec}"],
    ["analyze", "{spec}", "--format", "markdown"],
    ["analyze", "{spec}", "--format", "csv"],
    ["explain", "{spec}"],
    ["explain", "{spec}", "--layer", "[/bold]"],
    ["check", "{spec}", "{answers}"],
], ids=lambda a: " ".join(a))
def test_names_are_shown_visibly_and_never_as_markup(tmp_path, args):
    spec = tmp_path / "evil.yaml"
    spec.write_text(HOSTILE_SPEC)
    answers = tmp_path / "answers.yaml"
    answers.write_text(HOSTILE_ANSWERS)
    argv = [a.format(spec=spec, answers=answers) for a in args]
    r = runner.invoke(app, argv)
    assert r.exit_code in (0, 1), r.output  # check exits 1 for a wrong answer
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert_inert(r.output)
    if args[-1] != "csv" and "check" not in args:
        assert "[/bold]" in r.output  # printed literally, not taken as a closing tag


def test_plain_table_for_long_specs_is_inert(tmp_path):
    layers = "\n".join("  - relu: {name: \"r%d\\e[2J\"}" % i for i in range(200))
    spec = tmp_path / "long.yaml"
    spec.write_text(f"name: long\ninput: 4x4x1\nlayers:\n{layers}\n")
    r = runner.invoke(app, ["analyze", str(spec)])
    assert r.exit_code == 0, r.output
    assert_inert(r.output)


def test_errors_and_warnings_echo_names_inertly(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text('name: x\ninput: 7x7x1\nlayers:\n'
                    '  - conv: {name: "c\\e[2J[/red]", filters: 1, size: 3, stride: 3}\n'
                    '  - conv: {name: "d\\e]0;t\\a", filters: 1, sizes: 3}\n')
    r = runner.invoke(app, ["analyze", str(spec)])
    assert r.exit_code == 2
    assert_inert(r.output)
    assert "unknown option 'sizes'" in r.output


def test_error_snippet_of_a_huge_line_is_cut_around_the_column(tmp_path):
    spec = tmp_path / "wide.yaml"
    pad = " " * 3_000_000
    spec.write_text("{name: w, input: 8x8x1, layers: [" + pad + "{conv: {filters: 1, sizes: 3}}"
                    + pad + "]}\n")
    r = runner.invoke(app, ["analyze", str(spec)])
    assert r.exit_code == 2 and "unknown option 'sizes'" in r.output
    assert len(r.output) < 2000
    snippet, caret = [ln for ln in r.output.splitlines() if "|" in ln][:2]
    # the caret still points at the offending key inside the cut line
    assert snippet[caret.index("^"):].startswith("sizes")


# ---- train / evaluate / predict / lab print names from specs, data files and paths

EVIL = "e\x1b[2J\x1b]0;title\a[/bold][red]"   # clears the screen, retitles, styles
EVIL_SPEC = f'''name: "{EVIL.encode("unicode_escape").decode()}"
input: 4x4x1
layers:
  - conv: {{filters: 2, size: 3, pad: 1, name: "c{EVIL.encode("unicode_escape").decode()}"}}
  - batchnorm: {{name: "b{EVIL.encode("unicode_escape").decode()}"}}
  - flatten
  - fc: {{units: 3}}
'''


@pytest.fixture
def evil_run(tmp_path):
    """A hostile spec, data set (class names) and folder names trained once."""
    folder = tmp_path / f"dir{EVIL.replace('/', '_')}"
    folder.mkdir()
    spec = folder / "spec.yaml"
    spec.write_text(EVIL_SPEC)
    rng = np.random.default_rng(0)
    data = folder / "d.npz"
    np.savez(data, x=rng.random((24, 1, 4, 4)).astype(np.float32), y=np.arange(24) % 3,
             classes=np.array([f"k{i}{EVIL}" for i in range(3)]))
    out = folder / "out"
    r = runner.invoke(app, ["train", str(spec), "--data", f"npz:{data}", "--epochs", "1",
                            "--batch-size", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert_inert(r.output)
    assert "[red]" in r.output          # the folder name, printed literally
    return folder, out, data


@pytest.mark.parametrize("command", ["evaluate", "predict", "resume", "lab bn-fold"])
def test_train_evaluate_predict_lab_print_names_inertly(evil_run, command):
    folder, out, data = evil_run
    ckpt = out / "last.npz"
    if command == "evaluate":
        argv = ["evaluate", str(ckpt)]
    elif command == "predict":
        x = folder / f"img{EVIL.replace('/', '_')}.npy"
        np.save(x, np.random.default_rng(1).random((2, 1, 4, 4)).astype(np.float32))
        argv = ["predict", str(ckpt), str(x)]
    elif command == "resume":
        argv = ["train", "--resume", str(ckpt), "--epochs", "2", "--out", str(out)]
    else:
        argv = ["lab", "bn-fold", str(folder / "spec.yaml")]
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert_inert(r.output)
    assert "[red]" in r.output


# ---- the generated-kernel cache is private to the user


def test_kernel_cache_is_per_user_and_never_a_predictable_tmp_path(tmp_path, monkeypatch):
    from cnncalc.kernels.fast import gen

    monkeypatch.delenv("CNNCALC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gen.cache_dir() == tmp_path / "xdg" / "cnncalc" / "gen"
    monkeypatch.setenv("CNNCALC_CACHE_DIR", str(tmp_path / "mine"))
    assert gen.cache_dir() == tmp_path / "mine" / "gen"
    folder = gen._private(gen.cache_dir())
    assert folder.stat().st_mode & 0o777 == 0o700
    fallback = gen._fallback_dir()
    assert fallback.stat().st_mode & 0o777 == 0o700 and fallback.stat().st_uid == os.getuid()
    assert fallback.name != f"cnncalc-{os.getuid()}"


def test_kernel_cache_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    from cnncalc.engine.network import Network
    from cnncalc.kernels.fast import gen

    cache = tmp_path / "theirs"
    (cache / "gen").mkdir(parents=True)
    monkeypatch.setenv("CNNCALC_CACHE_DIR", str(cache))
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 4242)   # as if another user owned it
    with pytest.raises(gen.UnsafeCacheError, match="owned by uid"):
        gen._private(gen.cache_dir())
    monkeypatch.setattr(gen, "_LOADED", {})
    spec = "name: c\ninput: 8x8x1\nlayers:\n  - conv: {filters: 2, size: 3}\n  - relu\n" \
           "  - maxpool: {size: 2, stride: 2}\n  - flatten\n  - fc: {units: 3}\n"
    with pytest.warns(RuntimeWarning, match="private temporary folder"):
        net = Network(spec, parallel=False)
        net.forward(np.zeros((1, 1, 8, 8), np.float32))
    assert net.fast_path is not None
    assert not list((cache / "gen").iterdir())                   # nothing written there


def test_files_cnncalc_writes_are_strict_json_too(tmp_path):
    """A diverged sweep trial's NaN loss must not make result.json / results.json unparseable."""
    import json

    from cnncalc.jsonio import write_json

    write_json(tmp_path / "r.json", {"loss": float("nan"), "acc": np.float32(0.5),
                                     "where": tmp_path, "odd": {1, 2} and frozenset()})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "loss": None, "acc": 0.5, "where": str(tmp_path), "odd": "frozenset()"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]   # no temporary left behind
