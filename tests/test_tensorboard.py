"""`cnncalc train --tensorboard DIR`: TensorBoard event files through tensorboardX."""
from __future__ import annotations

import struct

import pytest
from typer.testing import CliRunner

from cnncalc.cli.app import app
from reference import spec_text

pytest.importorskip("tensorboardX")



def read_scalars(path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of one event file (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    data = path.read_bytes()
    scalars: dict[str, list[tuple[int, float]]] = {}
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            if v.WhichOneof("value") == "simple_value":
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


def test_train_writes_tensorboard_scalars(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(spec_text("8x8x1", ["conv: {filters: 4, size: 3, pad: 1}", "relu",
                                        "flatten", "fc: {units: 4}"]))
    tb = tmp_path / "tb"
    r = CliRunner().invoke(app, ["train", str(spec), "--deterministic", "--log-every", "1",
                                 "--epochs", "2", "--batch-size", "16", "--lr", "0.05",
                                 "--data", "synthetic:64",
                                 "--out", str(tmp_path / "run"), "--tensorboard", str(tb)])
    assert r.exit_code == 0, r.output
    (events,) = tb.glob("events.out.tfevents.*")
    scalars = read_scalars(events)
    # 64 images, batch 16: 4 steps per epoch, 2 epochs
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 9))
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([0.05] * 8)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert len(scalars["epoch/test_acc"]) == len(rows) == 2
    for (step, acc), row in zip(scalars["epoch/test_acc"], rows):
        fields = row.split(",")
        assert step == int(fields[1])
        assert acc == pytest.approx(float(fields[5]), rel=1e-6)
