"""Fuzzing the CLI in-process: generated and mutated specs and answers files must end with
exit code 0 or 2 (``check`` may also say 1: some answers are wrong), never a traceback.

Hypothesis builds specs from the layer registry (every type and option spelling) with hostile
values (huge, negative, non-finite, wrong-typed, Unicode digits), and mutates the text of the
shipped specs. Each case has a deadline; sizes are bounded so the suite stays fast.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnncalc.cli.app import app
from cnncalc.layers import LAYERS
from cnncalc.layers.options import all_spellings
from cnncalc.spec.schema import LAYER_META_KEYS, TOP_LEVEL_KEYS

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [(ROOT / "specs" / name).read_text(encoding="utf-8")
           for name in ("lenet5.yaml", "inception_block.yaml", "lecture_7x7_stride3.yaml")]
ANSWERS = (ROOT / "specs" / "answers_lenet5.yaml").read_text(encoding="utf-8")

# CI runs a fixed, fast sample; CNNCALC_FUZZ_EXAMPLES=2000 explores (randomly) for longer
_EXPLORE = int(os.environ.get("CNNCALC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXPLORE or 40, deadline=3000, derandomize=not _EXPLORE,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, 1, 2, 3, 2**31, 10**56, -(10**20), 1e9, 1.5, float("nan"),
                     float("inf"), "same", "valid", "³", "٣", "32x32x3", "28x28", "3x3",
                     "[/bold]", "", "x" * 200, True, False, None]),
    st.text(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12)

layer_kinds = st.sampled_from(sorted({*LAYERS.names(), "block", "nonsense"}))


@st.composite
def layer_entries(draw):
    kind = draw(layer_kinds)
    if kind == "block":
        return {"block": draw(st.one_of(st.just("unit"), values)),
                "repeat": draw(st.one_of(st.integers(1, 3), values))}
    cls = LAYERS.get(kind) if LAYERS.canonical(kind) else None
    names = (all_spellings(cls) if cls else []) + list(LAYER_META_KEYS) + ["bogus"]
    opts = draw(st.dictionaries(st.sampled_from(names), values, max_size=4))
    return draw(st.sampled_from([kind, {kind: opts}, {"type": kind, **opts}]))


@st.composite
def specs(draw):
    spec = {"input": draw(st.one_of(st.sampled_from(["8x8x3", "7x7x1", "28x28", "1x1x4"]),
                                    values)),
            "layers": draw(st.lists(layer_entries(), min_size=0, max_size=6)),
            "blocks": {"unit": [{"conv": {"filters": 2, "size": 1}}, "relu"]}}
    extra = draw(st.dictionaries(st.sampled_from([*TOP_LEVEL_KEYS, "bogus"]), values,
                                 max_size=2))
    spec.update(extra)
    return yaml.safe_dump(spec, allow_unicode=True)


@st.composite
def mutated(draw, texts):
    """A text with slices deleted, duplicated or replaced by YAML-significant characters."""
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        how = draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.text(alphabet="&*!:-[]{},'\"|>#% \n\t0123456789x³e.",
                                           max_size=12)) + text[i:]
    return text


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    # CliRunner catches what the command raised: only SystemExit (typer's exit) is fine
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}\n{result.output[-2000:]}"
    assert "Traceback" not in result.output
    return result


def write(folder: str, name: str, text: str) -> str:
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@FUZZ
@given(text=st.one_of(specs(), mutated(SHIPPED)))
def test_analyze_and_explain_never_crash(text):
    with tempfile.TemporaryDirectory() as folder:
        spec = write(folder, "spec.yaml", text)
        assert run("analyze", spec, "-f", "json").exit_code in (0, 2)
        assert run("explain", spec).exit_code in (0, 2)


@FUZZ
@given(spec=specs(), strict=st.booleans())
def test_generated_specs_with_conventions(spec, strict):
    with tempfile.TemporaryDirectory() as folder:
        path = write(folder, "spec.yaml", spec)
        args = ["analyze", path] + (["--strict"] if strict else ["--convention", "caffe"])
        assert run(*args).exit_code in (0, 2)


answer_values = st.one_of(values, st.sampled_from(["32x32x6", "5", "156", "1e400", "9" * 80,
                                                   "3³", "1,234", "416.52k"]))


@st.composite
def answers(draw):
    if draw(st.booleans()):
        return draw(mutated([ANSWERS]))
    layer_keys = st.one_of(st.integers(-2, 15), st.sampled_from(["conv1", "fc3", "³", "x"]))
    quantities = st.sampled_from(["output", "params", "weights", "biases", "macs", "flops",
                                  "rf", "bogus"])
    data = {"layers": draw(st.dictionaries(layer_keys, st.dictionaries(
                quantities, answer_values, max_size=3), max_size=3)),
            "totals": draw(st.dictionaries(quantities, answer_values, max_size=3))}
    return yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(text=answers())
def test_check_never_crashes(text):
    with tempfile.TemporaryDirectory() as folder:
        path = write(folder, "answers.yaml", text)
        # 0: all right, 1: some answers wrong, 2: the answers file is malformed
        assert run("check", str(ROOT / "specs" / "lenet5.yaml"), path).exit_code in (0, 1, 2)


# ------------------------------------------------------------------------------------------------
# training settings (the spec's train: and the command line) and checkpoints

from test_hostile_input import SPEC as TRAIN_SPEC  # noqa: E402 - a tiny trainable network

#: keep every fuzzed run short: these always come last on the command line, and win
RUN_LENGTH = ["--epochs", "1", "--batch-size", "8", "--eval-batch-size", "8"]
setting_values = st.one_of(values, st.sampled_from(
    ["1e400", "9" * 400, "-1", "0", "nan", "inf", "adam", "sgd", "cosine", "step", "pca",
     "whiten", "he", "normal:0.01", "xavier", "float64", "1,2", "0.9,0.999", "epoch", "auto"]))


@st.composite
def train_runs(draw):
    from cnncalc.train.settings import KEYS, option_flags

    train = draw(st.dictionaries(st.sampled_from([*KEYS, "bogus", "no_bias_correction"]),
                                 setting_values, max_size=4))
    argv = []
    for key in draw(st.lists(st.sampled_from([k for k in KEYS if k not in (
            "epochs", "batch_size", "eval_batch_size", "data")]), max_size=3, unique=True)):
        flag = option_flags(key)[0]
        if "/" in flag:
            argv.append(draw(st.sampled_from(flag.split("/"))))
        else:
            argv += [flag, str(draw(setting_values))]
    return train, argv


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    import numpy as np

    path = tmp_path_factory.mktemp("fuzz") / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((16, 1, 8, 8)).astype(np.float32), y=np.arange(16) % 3)
    return path


@settings(parent=FUZZ, max_examples=_EXPLORE or 20)
@given(run_args=train_runs())
def test_train_settings_never_crash(tiny_npz, run_args):
    train, argv = run_args
    with tempfile.TemporaryDirectory() as folder:
        text = TRAIN_SPEC + yaml.safe_dump({"train": train}, allow_unicode=True)
        spec = write(folder, "spec.yaml", text)
        r = run("train", spec, *argv, "--data", f"npz:{tiny_npz}", *RUN_LENGTH)
        assert r.exit_code in (0, 2), r.output[-2000:]


@pytest.fixture(scope="module")
def trained(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    spec = write(str(out.parent), "spec.yaml", TRAIN_SPEC)
    r = run("train", spec, "--data", f"npz:{tiny_npz}", "--out", str(out), *RUN_LENGTH)
    assert r.exit_code == 0, r.output
    return out / "last.npz"


meta_fields = st.sampled_from([("epoch",), ("step",), ("seed",), ("spec_text",), ("version",),
                               ("trees",), ("trees", "params"), ("trees", "buffers"),
                               ("trees", "extra"), ("trees", "metrics"),
                               ("trees", "optimizer_state"), ("trees", "preprocess_state"),
                               ("trees", "extra", "settings"), ("trees", "extra", "classes"),
                               ("trees", "extra", "batch"), ("trees", "extra", "partial")])


@settings(parent=FUZZ, max_examples=_EXPLORE or 20)
@given(edits=st.lists(st.tuples(meta_fields, st.one_of(setting_values, st.just("DELETE"))),
                      min_size=1, max_size=3),
       command=st.sampled_from(["evaluate", "predict", "resume"]))
def test_mutated_checkpoints_never_crash(trained, tiny_npz, edits, command):
    import json

    import numpy as np

    arrays = dict(np.load(trained, allow_pickle=False))
    meta = json.loads(str(arrays["__meta__"]))
    for path, value in edits:
        node = meta
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if value == "DELETE":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    arrays["__meta__"] = np.array(json.dumps(meta, allow_nan=True))
    with tempfile.TemporaryDirectory() as folder:
        ckpt = Path(folder) / "ck.npz"
        np.savez(ckpt, **arrays)
        x = Path(folder) / "x.npy"
        np.save(x, np.zeros((2, 1, 8, 8), np.float32))
        argv = {"evaluate": ["evaluate", str(ckpt)], "predict": ["predict", str(ckpt), str(x)],
                "resume": ["train", "--resume", str(ckpt), "--data", f"npz:{tiny_npz}",
                           *RUN_LENGTH[2:], "--epochs", "2"]}[command]
        assert run(*argv).exit_code in (0, 2)
