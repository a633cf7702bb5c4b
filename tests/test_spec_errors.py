"""Every user mistake: one clear message naming the layer, the YAML line, what and how to fix."""
import pytest

import cnncalc
from cnncalc.errors import ShapeError, SpecError


def load_text(text, **kw):
    return cnncalc.load(text, file="net.yaml", **kw)


def err_of(text, cls=SpecError, **kw):
    with pytest.raises(cls) as info:
        load_text(text, **kw)
    return info.value


def test_malformed_yaml_has_line():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {filters: 6, size: 5\n  - relu\n")
    assert "malformed YAML" in e.message
    assert e.location.line == 3


def test_duplicate_key_is_an_error():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {filters: 6, size: 5, size: 3}\n")
    assert "duplicate key 'size'" in e.message
    assert (e.location.line, e.location.col) == (3, 33)


def test_unknown_layer_type_suggests():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {filters: 6, size: 5}\n  - maxpoll: {size: 2}\n")
    assert "unknown layer type 'maxpoll'" in e.message
    assert "maxpool" in e.hint
    assert e.location.line == 4
    assert "layer 2" in e.where


def test_unknown_option_suggests():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {filters: 6, sizes: 5}\n")
    assert "unknown option 'sizes' for conv" in e.message
    assert "size" in e.hint
    assert (e.location.line, e.location.col) == (3, 24)


def test_missing_required_option():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {size: 5}\n")
    assert "conv needs 'out_channels'" in e.message and "filters" in e.message


@pytest.mark.parametrize("inp", ["32x32", "32x0x3", "axbxc", "{width: 3}", "-1x2x3", "[1, 2]"])
def test_malformed_or_missing_input(inp):
    text = f"input: {inp}\nlayers: [relu]\n"
    if inp == "32x32":  # WxH means one channel: valid
        assert load_text(text).input_shape == (1, 32, 32)
        return
    e = err_of(text)
    assert "input" in e.message and e.location.line == 1


def test_no_input():
    e = err_of("layers: [relu]\n")
    assert "no 'input'" in e.message and "32x32x3" in e.hint


def test_zero_or_negative_sizes():
    e = err_of("input: 8x8x1\nlayers:\n  - conv: {filters: 0, size: 3}\n")
    assert "filters: expected a positive integer" in e.message
    e = err_of("input: 8x8x1\nlayers:\n  - conv: {filters: 2, size: 3, stride: -1}\n")
    assert "stride" in e.message


def test_kernel_larger_than_padded_input():
    e = err_of("input: 4x4x1\nlayers:\n  - conv: {filters: 2, size: 7, pad: 1}\n", ShapeError)
    assert "larger than the padded input" in e.message
    assert "conv1" in e.where and e.location.line == 3
    assert "pad" in e.hint


def test_non_integer_output_warns_by_default():
    g = load_text("input: 7x7x1\nlayers:\n  - conv: {K: 1, F: 3, S: 3}\n")
    assert g.output_shape == (1, 2, 2)
    (w,) = g.warnings
    assert "conv1" in w and "(7 - 3 + 2·0)/3 + 1 = 2.33" in w
    assert "never seen" in w and "6" in w
    assert "pad 1" in w or "stride" in w


@pytest.mark.parametrize("how", [{"strict": True}, {"convention": "cs231n"}])
def test_non_integer_output_is_error_in_strict_mode(how):
    e = err_of("input: 7x7x1\nlayers:\n  - conv: {K: 1, F: 3, S: 3}\n", ShapeError, **how)
    assert "2.33" in e.message and "not an integer" in e.message
    assert "stride 2" in e.hint or "pad 1" in e.hint


def test_strict_in_spec():
    e = err_of("input: 7x7x1\nstrict: true\nlayers:\n  - conv: {K: 1, F: 3, S: 3}\n", ShapeError)
    assert "2.33" in e.message


def test_from_unknown_or_later_layer():
    e = err_of("input: 8x8x1\nlayers:\n  - conv: {filters: 2, size: 3, from: conv2}\n"
               "  - conv: {filters: 2, size: 3}\n")
    assert "'from: conv2' names no earlier layer" in e.message
    assert e.location.line == 3


def test_add_shape_mismatch():
    e = err_of("input: 8x8x1\nlayers:\n  - conv: {name: a, filters: 2, size: 3}\n"
               "  - add: {from: [a, input]}\n", ShapeError)
    assert "add needs inputs of one shape" in e.message and "6x6x2, 8x8x1" in e.message


def test_concat_spatial_mismatch():
    e = err_of("input: 8x8x1\nlayers:\n  - conv: {name: a, filters: 2, size: 3}\n"
               "  - concat: {from: [a, input]}\n", ShapeError)
    assert "concat needs equal width and height" in e.message


def test_merge_needs_two_inputs():
    e = err_of("input: 8x8x1\nlayers:\n  - add\n")
    assert "give 'from' a list" in e.message


def test_absurd_sizes():
    e = err_of("input: 100000x100000x3\nlayers:\n  - conv: {filters: 100000, size: 1}\n",
               ShapeError)
    assert "absurdly large" in e.message
    g = load_text("input: 4096x4096x3\nlayers:\n  - conv: {filters: 512, size: 3, pad: 1}\n")
    report = g.analyze(batch=4096, optimizer="adam")
    assert any("exceeds 1 TiB" in w for w in report["warnings"])


def test_unknown_top_level_key():
    e = err_of("input: 8x8x1\nlayer: [relu]\n")
    assert "unknown top-level key 'layer'" in e.message and "layers" in e.hint


def test_duplicate_layer_names():
    e = err_of("input: 8x8x1\nlayers:\n  - relu: {name: a}\n  - relu: {name: a}\n")
    assert "'a' is used twice" in e.message


def test_groups_must_divide():
    e = err_of("input: 8x8x3\nlayers:\n  - conv: {filters: 4, size: 3, groups: 2}\n", ShapeError)
    assert "groups=2 must divide" in e.message


def test_two_spellings_of_one_option():
    e = err_of("input: 8x8x3\nlayers:\n  - conv: {filters: 4, K: 4, size: 3}\n")
    assert "both set out_channels" in e.message


def test_safe_loader_only():
    e = err_of("input: !!python/object/apply:os.system ['echo hi']\nlayers: [relu]\n")
    assert "malformed YAML" in e.message or "input" in e.message


def test_unknown_block():
    e = err_of("input: 8x8x3\nblocks: {b: [relu]}\nlayers:\n  - {block: c}\n")
    assert "unknown block 'c'" in e.message and "'b'" in e.hint


def test_error_text_is_compiler_style():
    e = err_of("input: 32x32x3\nlayers:\n  - conv: {filters: 6, sizes: 5}\n")
    assert str(e).startswith("net.yaml:3:24: error: layer 1 'conv1' (conv): unknown option")


def test_unknown_convention_suggests_and_lists_the_registry():
    from cnncalc.conventions import CONVENTIONS

    e = err_of("input: 8x8x1\nconvention: pytroch\nlayers: [relu]\n")
    assert "unknown convention 'pytroch'" in e.message and e.location.line == 2
    assert "did you mean 'pytorch'?" in e.hint
    assert all(name in e.hint for name in CONVENTIONS.names())


def test_convention_entries_hold_the_rules_flags():
    from cnncalc.conventions import CONVENTIONS, get_convention

    for entry in CONVENTIONS:
        conv = entry.obj
        assert conv.name == entry.name and conv.description == entry.help
        assert {k: getattr(conv, k) for k in entry.extra} == dict(entry.extra)
    assert get_convention(None, strict=True).name == "cs231n"
    caffe = get_convention("Caffe", strict=True)
    assert (caffe.name, caffe.strict, caffe.pool_ceil) == ("caffe", True, True)
