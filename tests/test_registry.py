"""The registry type every named concept uses."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncalc.errors import CnnCalcError, TrainError
from cnncalc.registry import REQUIRED, Param, Registry, normalize


def make() -> Registry:
    r = Registry("fruit", error=TrainError)
    r.add("apple", 1, aliases=("pomme", "malus-domestica"),
          params=(Param("ripe", True, "picked ripe"), Param("weight", REQUIRED, "grams")),
          help="a pome", colour="red")
    r.add("cherry_plum", 2)
    return r


def test_lookup_forgives_case_blanks_and_dashes():
    r = make()
    for spelling in ("apple", "APPLE", " pomme ", "Malus_Domestica", "malus domestica"):
        assert r.lookup(spelling).name == "apple"
    assert r.lookup("cherry-plum").obj == 2
    assert r.names() == ("apple", "cherry_plum")
    assert r.aliases() == {"pomme": "apple", "malus-domestica": "apple"}


def test_entry_declares_params_defaults_and_extra():
    e = make().lookup("apple")
    assert e.param_names == ("ripe", "weight")
    assert e.defaults() == {"ripe": True}
    assert e.param("weight").required and not e.param("ripe").required
    assert e.extra["colour"] == "red" and e.help == "a pome"


def test_unknown_name_raises_the_registry_error_with_a_suggestion():
    r = make()
    with pytest.raises(TrainError, match="unknown fruit 'aple'") as info:
        r.lookup("aple")
    assert "did you mean 'apple'?" in info.value.hint and "cherry_plum" in info.value.hint
    with pytest.raises(TrainError, match="fruit name must be a string"):
        r.lookup(3)
    assert isinstance(info.value, CnnCalcError)


def test_a_name_taken_twice_is_refused():
    r = make()
    with pytest.raises(TypeError, match="registered twice"):
        r.add("Pomme", 3)


@given(st.text(min_size=1, max_size=20))
def test_normalize_is_idempotent_and_every_registered_spelling_resolves(name):
    assert normalize(normalize(name)) == normalize(name)
    r = Registry("thing")
    if normalize(name):
        r.add(name, object())
        assert r.canonical(name.upper() if name.upper().lower() == name.lower() else name) == name


def test_signature_params_read_defaults_once_and_help_along_the_bases():
    from cnncalc.registry import doc_line, signature_params

    class Base:
        """A rule.

        More text."""

        param_help = {"lr": "learning rate", "decay": "base help"}

        def __init__(self, lr, decay=0.9, *, alpha=None): ...

    class Child(Base):
        param_help = {"decay": "child help"}

    params = signature_params(Child)
    assert [(p.name, p.default, p.help) for p in params] == [
        ("lr", REQUIRED, "learning rate"), ("decay", 0.9, "child help")]
    assert doc_line(Base) == "A rule." and doc_line(Child) == ""
