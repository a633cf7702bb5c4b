"""Hostile and broken specs end in a located CnnCalcError, quickly and in bounded memory."""
import pytest

import cnncalc
from cnncalc.errors import CnnCalcError, SpecError
from cnncalc.layers.options import MAX_INT
from cnncalc.spec.blocks import MAX_LAYERS
from cnncalc.spec.loader import MAX_NESTING, MAX_VALUES

OK_TAIL = "input: 8x8x1\nlayers: [relu]\n"


def alias_bomb(levels=12, width=9):
    text = "a0: &a0 [" + ", ".join(["x"] * width) + "]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]\n"
    return text + OK_TAIL


def error_of(text) -> CnnCalcError:
    with pytest.raises(CnnCalcError) as err:
        cnncalc.load(text).analyze()
    assert len(str(err.value)) < 1000     # fits on one screen
    return err.value


def test_alias_bomb_is_refused_by_its_expansion():
    e = error_of(alias_bomb())
    assert f"more than {MAX_VALUES:,} values" in e.message and e.location.line >= 1


def test_self_referencing_alias():
    e = error_of("input: 8x8x1\nlayers: &x [*x]\n")
    assert "contains it" in e.message and e.location.line == 2


@pytest.mark.parametrize("tag,shown", [("!!python/object/apply:os.system ['echo hi']",
                                        "!!python/object/apply:os.system"),
                                       ("!!python/name:os.system ''", "!!python/name:os.system"),
                                       ("!custom 3", "!custom"), ("!!set {a}", "!!set")])
def test_non_standard_tags_name_the_tag_and_line(tag, shown):
    e = error_of(f"name: {tag}\n" + OK_TAIL)
    assert f"YAML tag '{shown}' on 'name' is not allowed" in e.message
    assert e.location.line == 1


def test_tagged_key():
    e = error_of("? !!python/name:os.system x\n: 1\n" + OK_TAIL)
    assert "!!python/name:os.system" in e.message


def test_standard_tags_are_fine():
    g = cnncalc.load("name: !!str net\ninput: !!str 8x8x1\nlayers: !!seq [relu]\n")
    assert g.name == "net"


def test_deep_nesting():
    e = error_of("input: 8x8x1\nlayers: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"more than {MAX_NESTING} levels" in e.message


def test_huge_repeat_is_refused_before_unrolling():
    e = error_of("input: 8x8x1\nlayers:\n - {repeat: 1000000000, layers: [relu]}\n")
    assert f"more than {MAX_LAYERS:,} layers" in e.message and e.location.line == 3


@pytest.mark.parametrize("value", ["1e56", "9" * 400, "1000000000000", "-" + "9" * 5000],
                         ids=["1e56", "400 digits", "1e12", "-5000 digits"])
def test_huge_integers_are_bounded(value):
    e = error_of(f"input: 8x8x1\nlayers:\n - conv: {{K: 1, F: 1, pad: 0, S: {value}}}\n")
    assert ("S:" in e.message or "cannot be read as a number" in e.message)
    assert e.location.line == 3 and len(e.message) < 300


def test_largest_allowed_integer_still_parses():
    from cnncalc.layers.options import positive_int

    assert positive_int(MAX_INT) == MAX_INT
    with pytest.raises(ValueError, match="at most"):
        positive_int(MAX_INT + 1)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1" + "0" * 400],
                         ids=["nan", "inf", "-inf", "1e400"])
def test_non_finite_numbers(value):
    e = error_of(f"input: 8x8x1\nlayers:\n - batchnorm: {{momentum: {value}}}\n")
    assert "finite" in e.message


@pytest.mark.parametrize("entry", ["{block: [u], name: a}", "{block: {u: 1}}",
                                   "{block: u, name: [a]}"])
def test_wrong_types_in_block_entries(entry):
    e = error_of(f"input: 8x8x1\nblocks: {{u: [relu]}}\nlayers:\n - {entry}\n")
    assert isinstance(e, SpecError) and e.location.line == 4


def test_block_params_as_a_list():
    e = error_of("input: 8x8x1\nblocks: {u: {params: [1], layers: [relu]}}\n"
                 "layers:\n - {block: u}\n")
    assert "'params' must map" in e.message


def test_unicode_digits_are_not_numbers():
    e = error_of("input: 8x8x1\nlayers:\n - conv: {K: 1, F: '³'}\n")
    assert "F:" in e.message


def test_input_with_two_sizes_is_depth_one():
    g = cnncalc.load("input: 28x28\nlayers: [relu]\n")
    assert g.input_shape == (1, 28, 28) and g.analyze()["input"]["depth"] == 1


def test_value_budget_counts_only_what_aliases_add(monkeypatch):
    """A long spec written out is fine; the budget is for values that aliases repeat."""
    from cnncalc.spec import loader

    monkeypatch.setattr(loader, "MAX_VALUES", 40)
    plain = "input: 4x4x1\nlayers:\n" + "  - relu\n" * 60        # 60+ values, no alias
    assert len(cnncalc.load(plain).nodes) == 60
    aliased = ("input: 4x4x1\nblock: &b [relu, relu, relu, relu, relu, relu, relu, relu]\n"
               "layers: [" + ", ".join(["*b"] * 6) + "]\n")          # 6 x 8 repeated values
    with pytest.raises(CnnCalcError, match="more than 40 values"):
        cnncalc.load(aliased)
