"""ONNX export and import: onnxruntime agrees with the engine for every executable layer kind,
every shipped spec survives spec → ONNX → spec with the same analysis, and bad models fail
with a clear error."""
from __future__ import annotations

import numpy as np
import pytest
from reference import KINDS, case_spec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnncalc.errors import CnnCalcError  # noqa: E402
from cnncalc.layers import LAYERS  # noqa: E402
from cnncalc.onnx import InteropError  # noqa: E402
from cnncalc.onnx.export import export_graph, export_spec, ir_version_for  # noqa: E402
from cnncalc.onnx.importer import import_model  # noqa: E402
from cnncalc.spec import load  # noqa: E402

pytestmark = pytest.mark.onnx

def shipped_specs():
    from conftest import SPECS

    return sorted(p for p in SPECS.glob("*.yaml") if not p.name.startswith("answers_"))


def run_ort(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def random_network(graph, seed: int = 0, spread: float | None = 0.5):
    """An engine network with random weights (N(0, spread²); He's init with None) and BN
    statistics away from their start values (so that the exported statistics matter)."""
    from cnncalc.engine.network import Network

    net = Network(graph, seed=seed, parallel=False)
    rng = np.random.default_rng(seed + 1)
    for key, value in net.params.items():
        if spread is not None:
            value[...] = rng.normal(0.0, spread, value.shape)
    for key, value in net.buffers.items():
        value[...] = (rng.uniform(0.5, 1.5, value.shape) if key.endswith("running_var")
                      else rng.normal(0.0, 0.3, value.shape))
    return net


def analysis_view(graph) -> list:
    """What a round trip must keep: per layer its name, output, params, MACs and field (an
    adaptive pool with equal bins comes back as the average pool ONNX writes it as)."""
    return [(layer["name"], layer["output"], layer["params"], layer["macs"], layer["rf"])
            for layer in graph.analyze()["layers"]]


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("kind", [k for k in KINDS if LAYERS.get(k).executable()])
def test_onnxruntime_matches_the_engine_for_every_kind(kind, opset):
    graph = load(case_spec(kind))
    net = random_network(graph)
    model = export_graph(graph, {**net.params, **net.buffers}, opset=opset)
    x = np.random.default_rng(7).normal(0.0, 2.0, (3, *graph.input_shape)).astype(np.float32)
    expected = net.forward(x, training=False)
    got = run_ort(model, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [k for k in KINDS if LAYERS.get(k).onnx_op_types()])
def test_every_importable_kind_round_trips(kind):
    """At opset 18, where every such kind (Mish included) is one ONNX op."""
    graph = load(case_spec(kind))
    imported = import_model(export_spec(graph, opset=18))
    back = load(imported.spec_text)
    assert analysis_view(back) == analysis_view(graph)
    assert [n.kind for n in back.nodes] == [n.kind for n in graph.nodes]


#: over 50 M parameters: minutes of initialising, exporting and running
BIG = ("alexnet", "alexnet_torchvision", "vgg16")


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in BIG
                                  else p for p in shipped_specs()], ids=lambda p: p.stem)
def test_shipped_spec_runs_in_onnxruntime_and_round_trips(path):
    """One export per shipped spec (VGG-16's weights take seconds to write): onnxruntime
    computes what the engine computes, and ONNX → spec keeps the analysis."""
    graph = load(path)
    net = random_network(graph, seed=3, spread=None)
    model = export_graph(graph, {**net.params, **net.buffers})
    x = np.random.default_rng(5).normal(size=(1, *graph.input_shape)).astype(np.float32)
    expected = net.forward(x, training=False)
    # float32 sums over thousands of terms in another order: 1e-5 of the output's scale
    np.testing.assert_allclose(run_ort(model, x), expected, rtol=1e-5,
                               atol=1e-5 * float(np.abs(expected).max()))
    del net
    back = load(import_model(model).spec_text)
    assert analysis_view(back) == analysis_view(graph)
    assert back.analyze()["totals"]["params"] == graph.analyze()["totals"]["params"]
    assert back.analyze()["totals"]["macs"] == graph.analyze()["totals"]["macs"]


def test_import_carries_the_weights():
    graph = load(case_spec("batchnorm"))
    net = random_network(graph)
    imported = import_model(export_graph(graph, {**net.params, **net.buffers}))
    assert set(imported.params) == set(net.params)
    assert set(imported.buffers) == set(net.buffers)
    for key, value in net.buffers.items():
        np.testing.assert_array_equal(imported.buffers[key], value)


def test_export_stamps_the_ir_version_of_its_opset():
    model = export_spec(case_spec("conv"), opset=13)
    assert model.opset_import[0].version == 13
    assert model.ir_version == ir_version_for(13) == 7
    assert export_spec(case_spec("conv")).ir_version == 8       # opset 17


def _model(nodes, initializers=(), input_shape=(1, 3, 8, 8), output_shape=None):
    helper = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("x", f32, list(input_shape))],
        [helper.make_tensor_value_info(nodes[-1].output[0], f32, output_shape)],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_operator_names_op_node_and_inputs():
    model = _model([onnx.helper.make_node("Relu", ["x"], ["r"], name="act"),
                    onnx.helper.make_node("Cos", ["r"], ["y"], name="weird")])
    with pytest.raises(InteropError) as err:
        import_model(model)
    text = str(err.value)
    assert "'Cos'" in text and "weird" in text and "r [1, 3, 8, 8]" in text


def test_view_flatten_pattern_resolves():
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    h, init = onnx.helper, onnx.numpy_helper
    consts = [init.from_array(np.array(0, np.int64), "zero"),
              init.from_array(np.array([0], np.int64), "axes"),
              init.from_array(np.array([-1], np.int64), "minus1"),
              init.from_array(np.ones((5, 192), np.float32), "w")]
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             h.make_node("Reshape", ["x", "shape"], ["flat"], name="/Reshape"),
             h.make_node("Gemm", ["flat", "w"], ["y"], name="/fc/Gemm", transB=1)]
    graph = load(import_model(_model(nodes, consts)).spec_text)
    assert [n.kind for n in graph.nodes] == ["flatten", "fc"]
    assert graph.analyze()["totals"]["params"] == 5 * 192
    assert graph.nodes[-1].name == "fc"


def test_matmul_add_is_one_fc_and_identity_shared_initializer_is_noted():
    h, init = onnx.helper, onnx.numpy_helper
    consts = [init.from_array(np.ones((192, 4), np.float32), "w"),
              init.from_array(np.ones((4,), np.float32), "b")]
    nodes = [h.make_node("Flatten", ["x"], ["f"], axis=1),
             h.make_node("MatMul", ["f", "w"], ["m"]),
             h.make_node("Add", ["m", "b"], ["y"])]
    graph = load(import_model(_model(nodes, consts)).spec_text)
    assert [n.kind for n in graph.nodes] == ["flatten", "fc"]
    assert graph.analyze()["totals"]["params"] == 192 * 4 + 4


def test_analyze_reads_onnx_files(tmp_path):
    from typer.testing import CliRunner

    from cnncalc.cli import app

    path = tmp_path / "conv.onnx"
    onnx.save(export_spec(case_spec("conv")), path)
    result = CliRunner().invoke(app, ["analyze", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"params": 112' in result.output


def test_a_damaged_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(CnnCalcError, match="cannot read ONNX file"):
        load(path)


TINY = """name: tiny
input: 12x12x1
layers:
  - conv: {filters: 4, size: 3, pad: 1}
  - batchnorm
  - relu
  - maxpool: {size: 2}
  - fc: {units: 4}
"""


@pytest.mark.parametrize("preprocess", ["channel_mean_std", "mean_image"])
def test_exported_checkpoint_takes_raw_input_and_gives_the_logits(tmp_path, preprocess):
    """A trained checkpoint's ONNX model applies its preprocessing first: onnxruntime on raw
    images equals the loaded model on prepared ones."""
    from typer.testing import CliRunner

    from cnncalc.cli.app import app
    from cnncalc.train.evaluate import load_model

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(spec), "--data", "synthetic:128", "--epochs", "1",
                                 "--deterministic", "--preprocess", preprocess,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    ckpt = tmp_path / "run" / "last.npz"
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    loaded = load_model(ckpt)
    x = np.random.default_rng(0).uniform(size=(4, 1, 12, 12)).astype(np.float32)
    expected = loaded.net.forward(loaded.prepare(x), training=False)
    np.testing.assert_allclose(run_ort(model, x), expected, rtol=1e-5, atol=1e-5)


def test_import_writes_a_spec_and_a_checkpoint_that_predict_runs(tmp_path):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app
    from cnncalc.train.evaluate import load_model

    graph = load(TINY)
    net = random_network(graph)
    path = tmp_path / "tiny.onnx"
    onnx.save(export_graph(graph, {**net.params, **net.buffers}), path)
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(path), "-o", str(tmp_path / "t.yaml"),
                                 "--checkpoint", str(tmp_path / "t.npz")])
    assert result.exit_code == 0, result.output
    assert analysis_view(load(tmp_path / "t.yaml")) == analysis_view(graph)
    loaded = load_model(tmp_path / "t.npz")
    x = np.random.default_rng(1).normal(size=(2, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(loaded.net.forward(x, training=False),
                               net.forward(x, training=False), rtol=1e-6, atol=1e-6)
    stdout = runner.invoke(app, ["import", str(path)])
    assert stdout.exit_code == 0 and stdout.output.startswith("name: tiny")


def test_cli_unsupported_operator_exits_2(tmp_path):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    path = tmp_path / "cos.onnx"
    onnx.save(_model([onnx.helper.make_node("Cos", ["x"], ["y"], name="weird")]), path)
    for command in (["analyze", str(path)], ["import", str(path)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        assert "Cos" in result.output and "weird" in result.output


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch):
    import sys

    from cnncalc.onnx import require

    monkeypatch.setitem(sys.modules, "onnx", None)     # import onnx now raises ImportError
    with pytest.raises(InteropError) as err:
        require("onnx")
    assert err.value.hint == 'pip install "cnncalc[onnx]"'
    assert "\n" not in err.value.headline()


def test_readme_lists_every_importable_onnx_op():
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## ONNX and PyTorch"):readme.index("## Errors")]
    ops = {op for kind in LAYERS.names() for op in LAYERS.get(kind).onnx_op_types()}
    missing = sorted(op for op in ops if op not in section)
    assert not missing, f"README's 'ONNX and PyTorch' does not list {missing}"


PCA_SPEC = """name: pca_tiny
input: 8x8x1
layers:
  - conv: {filters: 4, size: 3, pad: 1}
  - relu
  - maxpool: {size: 2}
  - fc: {units: 5}
"""


def pca_checkpoint(tmp_path, preprocess: str, n_fit: int):
    """A checkpoint of PCA_SPEC with random weights and ``preprocess`` fitted on ``n_fit``
    uniform 8x8 images (64 pixels: fewer images give zero eigenvalues), exported by the CLI."""
    from typer.testing import CliRunner

    from cnncalc.cli.app import app
    from cnncalc.train import preprocess as prep
    from cnncalc.train.checkpoint import save_checkpoint

    rng = np.random.default_rng(11)
    fitted = prep.fit(preprocess, rng.uniform(size=(n_fit, 1, 8, 8)))
    net = random_network(load(PCA_SPEC), seed=4)
    ckpt = save_checkpoint(tmp_path / "pca.npz", params=net.params, buffers=net.buffers,
                           optimizer_state=None, schedule_state=None,
                           preprocess_state=fitted.state_dict(), spec_text=PCA_SPEC, seed=0,
                           epoch=1, step=1)
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    return ckpt, model, fitted


def float32_bound(fitted, x: np.ndarray) -> np.ndarray:
    """A worst-case bound on the float32 rounding error of ``fitted.transform(x)`` per value:
    (x - mean) @ U sums D products, each of float32-rounded values, so it is off by at most
    (D + 3)·u·((|x| + |mean|) @ |U|) with u = 2^-24; whitening then divides by sqrt(eigval +
    eps) (and rounds once more). Small eigenvalues make it large: that is the conditioning."""
    n, d = x.shape[0], fitted.mean.size
    u = 2.0 ** -24
    terms = (np.abs(x.reshape(n, -1)).astype(np.float64) + np.abs(fitted.mean)) \
        @ np.abs(fitted.components)
    divisor = fitted._divisor() if fitted._divisor() is not None else 1.0
    exact = fitted.transform(x.astype(np.float64)).reshape(n, -1)
    return ((d + 3) * u * terms / divisor + 2 * u * np.abs(exact)).reshape(x.shape)


def preprocessing_output(model, x: np.ndarray) -> np.ndarray:
    """What the exported model's preprocessing (the first Reshape) computes on ``x``."""
    probe = type(model)()
    probe.CopyFrom(model)
    first = next(n for n in probe.graph.node if n.op_type == "Reshape")
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(first.output[0]))
    session = ort.InferenceSession(probe.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run([first.output[0]], {"input": x})[0]


@pytest.mark.parametrize("preprocess", ["pca", "whiten"])
def test_exported_pca_and_whitening_give_the_logits_of_predict(tmp_path, preprocess):
    """Fitted on 512 images of 64 pixels the smallest eigenvalue is about 0.03, so whitening
    scales rounding errors by at most ~6: onnxruntime on raw images equals `cnncalc predict`'s
    logits within 1e-5."""
    from cnncalc.train.evaluate import load_model

    ckpt, model, fitted = pca_checkpoint(tmp_path, preprocess, n_fit=512)
    assert fitted.eigval.min() > 0.01
    loaded = load_model(ckpt)
    x = np.random.default_rng(0).uniform(size=(6, 1, 8, 8)).astype(np.float32)
    expected = loaded.net.predict(loaded.prepare(x))
    np.testing.assert_allclose(run_ort(model, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preprocess", ["pca", "whiten"])
def test_exported_whitening_is_within_float32_rounding_of_the_exact_transform(tmp_path,
                                                                              preprocess):
    """Fitted on 40 images of 64 pixels, 24 eigenvalues are 0 and whitening multiplies their
    components by 1/sqrt(1e-5) ~ 316: no fixed tolerance fits, so the exported preprocessing
    and cnncalc's own float32 transform are each held to the worst-case float32 error bound
    around the float64 transform."""
    ckpt, model, fitted = pca_checkpoint(tmp_path, preprocess, n_fit=40)
    x = np.random.default_rng(1).uniform(size=(6, 1, 8, 8)).astype(np.float32)
    exact = fitted.transform(x.astype(np.float64))
    bound = float32_bound(fitted, x)
    assert np.all(np.abs(preprocessing_output(model, x) - exact) <= bound)
    assert np.all(np.abs(fitted.transform(x) - exact) <= bound)


@pytest.mark.parametrize("spec", ["SHARED", "TIED"])
def test_a_sharing_layer_exports_the_owners_initializer_and_imports_as_share(spec):
    """spec → ONNX: a shared tensor is one initializer that every use reads (as PyTorch
    exports a module called twice, or tied weights); ONNX → spec: share: again, with the same
    analysis."""
    import test_share

    graph = load(getattr(test_share, spec))
    net = random_network(graph)
    model = export_graph(graph, {**net.params, **net.buffers})
    if spec == "SHARED":
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert [list(n.input[1:]) for n in convs] == [["c1.weight", "c1.bias"]] * 2
    else:
        gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
        assert [list(n.input[1:]) for n in gemms] == [["enc.weight", "enc.bias"],
                                                      ["enc.weight", "dec.bias"]]
    assert sorted(i.name for i in model.graph.initializer if "." in i.name) == sorted(
        [*net.params, *net.buffers])
    x = np.random.default_rng(2).normal(size=(3, *graph.input_shape)).astype(np.float32)
    np.testing.assert_allclose(run_ort(model, x), net.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    imported = import_model(model)
    back = load(imported.spec_text)
    assert [(n.name, n.shares, n.shared) for n in back.nodes] \
        == [(n.name, n.shares, n.shared) for n in graph.nodes]
    assert analysis_view(back) == analysis_view(graph)
    assert set(imported.params) == set(net.params) and imported.notes == []


def _two_gemms(second_weight: str, extra_nodes=()):
    h, init = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(0)
    consts = [init.from_array(rng.normal(size=(6, 6)).astype(np.float32), "w"),
              init.from_array(np.zeros(6, np.float32), "b")]
    nodes = [*extra_nodes,
             h.make_node("Gemm", ["x", "w", "b"], ["y1"], name="/a/Gemm", transB=1),
             h.make_node("Gemm", ["y1", second_weight, "b"], ["y"], name="/b/Gemm", transB=1)]
    return _model(nodes, consts, input_shape=(1, 6))


@pytest.mark.parametrize("through_identity", [False, True])
def test_an_initializer_read_by_two_gemms_counts_once(through_identity):
    extra = [onnx.helper.make_node("Identity", ["w"], ["w2"])] if through_identity else []
    result = import_model(_two_gemms("w2" if through_identity else "w", extra))
    graph = load(result.spec_text)
    assert [(n.name, n.shares) for n in graph.nodes] == [("a", None), ("b", "a")]
    assert graph.analyze()["totals"]["params"] == 6 * 6 + 6
    assert graph.analyze()["totals"]["macs"] == 2 * 36
    assert sorted(result.params) == ["a.bias", "a.weight"]


def test_identity_deduplicated_vectors_stay_separate_parameters():
    """PyTorch's exporter points equal-valued parameters of separate modules (fresh batch
    norm scales) at one initializer through Identity: they stay one parameter per layer."""
    h, init = onnx.helper, onnx.numpy_helper
    consts = [init.from_array(np.ones(3, np.float32), "bn1.weight"),
              init.from_array(np.zeros(3, np.float32), "bn1.bias")]
    nodes = [h.make_node("Identity", ["bn1.weight"], ["bn2.weight"]),
             h.make_node("Identity", ["bn1.bias"], ["bn2.bias"]),
             h.make_node("BatchNormalization", ["x", "bn1.weight", "bn1.bias", "bn1.bias",
                                                "bn1.weight"], ["y1"], name="/bn1/BN"),
             h.make_node("BatchNormalization", ["y1", "bn2.weight", "bn2.bias", "bn2.bias",
                                                "bn2.weight"], ["y"], name="/bn2/BN")]
    result = import_model(_model(nodes, consts))
    graph = load(result.spec_text)
    assert [n.shares for n in graph.nodes] == [None, None]
    assert graph.analyze()["totals"]["params"] == 2 * 6
    assert result.notes == []


@pytest.mark.parametrize("pool", ["maxpool", "avgpool"])
def test_ceil_mode_pool_whose_last_window_starts_in_the_padding(pool):
    """9 + 2·1 padding, windows of 2 by 2: ONNX's ceil mode gives 6 outputs, PyTorch's rule
    (the last window must start inside the image or its left padding) 5. The export trims
    the sixth; the import reads the trimmed pool back as one layer."""
    graph = load(f"input: 9x9x2\nlayers:\n  - {pool}: {{size: 2, stride: 2, pad: 1, "
                 "ceil_mode: true}\n  - conv: {filters: 2, size: 1}\n")
    assert graph.nodes[0].out_shape == (2, 5, 5)
    net = random_network(graph)
    model = export_graph(graph, {**net.params, **net.buffers})
    x = np.random.default_rng(3).normal(size=(2, 2, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run_ort(model, x), net.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    back = load(import_model(model).spec_text)
    assert analysis_view(back) == analysis_view(graph)


def test_explain_check_and_report_read_onnx_files(tmp_path):
    from conftest import SPECS
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    path = tmp_path / "lenet5.onnx"
    onnx.save(export_spec(SPECS / "lenet5.yaml"), path)
    answers = tmp_path / "answers.yaml"
    answers.write_text("layers:\n  conv1: {output: 28x28x6, params: 156}\n"
                       "totals: {params: 61706}\n")
    runner = CliRunner()
    explained = runner.invoke(app, ["explain", str(path)])
    assert explained.exit_code == 0 and "conv1" in explained.output
    checked = runner.invoke(app, ["check", str(path), str(answers)])
    assert checked.exit_code == 0, checked.output
    page = tmp_path / "lenet5.html"
    reported = runner.invoke(app, ["report", str(path), "-o", str(page)])
    assert reported.exit_code == 0, reported.output
    assert "61,706" in page.read_text(encoding="utf-8")


def test_an_initializer_read_as_different_tensors_is_counted_twice_and_said():
    """A decoder reading the encoder's weight transposed (Gemm without transB) holds another
    tensor in cnncalc's layout: it keeps its copy, and a note says what that overcounts."""
    model = _two_gemms("w")
    gemm = model.graph.node[-1]
    del gemm.attribute[:]                   # transB = 0: the same initializer, transposed
    result = import_model(model)
    assert [n.shares for n in load(result.spec_text).nodes] == [None, None]
    assert any("'w' (36 values) as different tensors" in n and "36 more" in n
               for n in result.notes)
