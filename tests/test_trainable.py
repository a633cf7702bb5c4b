"""`trainable: false`: frozen parameters are counted apart, and the trainer refuses them."""
import pytest

import cnncalc
from cnncalc.errors import SpecError

FROZEN = """
input: 8x8x3
layers:
  - conv: {filters: 4, size: 3, pad: 1, trainable: false}
  - batchnorm
  - flatten
  - fc: {units: 2}
"""


def test_frozen_layer_params_are_split_from_the_trained_ones():
    report = cnncalc.load(FROZEN).analyze(optimizer="adam")
    conv, bn, _, fc = report["layers"]
    assert (conv["params"], conv["trainable"]) == (4 * 27 + 4, False)
    assert (bn["params"], bn["buffers"], bn["trainable"]) == (8, 8, True)
    t = report["totals"]
    assert t["params"] == 112 + 8 + 8 * 8 * 4 * 2 + 2
    assert t["non_trainable_params"] == 112
    assert t["trainable_params"] == t["params"] - 112
    assert t["buffers"] == 8
    assert t["param_bytes"] == 4 * (t["params"] + t["buffers"])
    tr = t["training"]
    assert tr["gradient_bytes"] == 4 * t["trainable_params"]
    assert tr["optimizer_state_bytes"] == 2 * 4 * t["trainable_params"]


def test_a_block_entry_can_freeze_every_layer_of_its_instances():
    g = cnncalc.load("""
input: 8x8x3
blocks:
  unit: [conv: {filters: 3, size: 3, pad: 1}, relu]
layers:
  - {block: unit, repeat: 2, trainable: false}
  - conv: {filters: 3, size: 1}
""")
    t = g.analyze()["totals"]
    assert t["non_trainable_params"] == 2 * (3 * 27 + 3)
    assert t["trainable_params"] == 3 * 3 + 3


@pytest.mark.parametrize("value", ["maybe", 3, [True]])
def test_trainable_must_be_a_boolean(value):
    with pytest.raises(SpecError, match="trainable") as err:
        cnncalc.load({"input": "8x8x3", "layers": [{"conv": {"K": 1, "F": 1,
                                                              "trainable": value}}]})
    assert "trainable: false" in err.value.hint


def test_train_refuses_frozen_layers_with_a_clear_error():
    from cnncalc.train.runner import reject_frozen_layers

    with pytest.raises(SpecError, match="conv1") as err:
        reject_frozen_layers(cnncalc.load(FROZEN))
    assert "trainable: false" in str(err.value)
    reject_frozen_layers(cnncalc.load("input: 8x8x3\nlayers: [relu]"))   # nothing frozen: fine
