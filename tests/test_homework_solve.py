"""`cnncalc solve`: every answer, put back into the analyzer's rule, gives the asked size."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli import app
from cnncalc.errors import SpecError
from cnncalc.homework.solve import solve
from cnncalc.layers.base import out_size

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_issue_example_32_to_16_with_f3():
    r = solve(32, 16, kernel=3)
    assert [(s["F"], s["S"], s["P"]) for s in r["solutions"]] == [(3, 2, 1)]
    assert r["solutions"][0]["worked"] == "(32 - 3 + 2·1)/2 + 1 = 16.5 → 16 (floor)"
    free = {(s["F"], s["S"], s["P"]) for s in solve(32, 16)["solutions"]}
    assert {(2, 2, 0), (3, 2, 1), (4, 2, 1), (5, 2, 2), (7, 2, 3)} <= free


def test_strict_and_exact_keep_only_integer_solutions():
    r = solve(32, 16, strict=True)
    assert all(s["exact"] for s in r["solutions"])
    assert {(s["F"], s["S"], s["P"]) for s in r["solutions"]} == \
        {(s["F"], s["S"], s["P"]) for s in solve(32, 16, exact=True)["solutions"]}
    assert (3, 2, 1) not in {(s["F"], s["S"], s["P"]) for s in r["solutions"]}


def test_pool_conventions():
    pt = {(s["F"], s["S"], s["P"]) for s in solve(7, 4, kind="pool")["solutions"]}
    caffe = {(s["F"], s["S"], s["P"]) for s in solve(7, 4, kind="pool",
                                                       convention="caffe")["solutions"]}
    assert (2, 2, 0) in caffe and (2, 2, 0) not in pt


def test_cli_json_and_table():
    res = run("solve", "--input", 32, "--output", 16, "-F", 3, "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["count"] == 1 and d["solutions"][0]["S"] == 2 and d["solutions"][0]["P"] == 1
    res = run("solve", "pool", "-i", 32, "-o", 16, "--exact")
    assert res.exit_code == 0 and "(32 - 2 + 2·0)/2 + 1 = 16" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["-i", 32, "-o", 40, "-F", 3], "no conv gives output 40"),
    (["-i", 7, "-o", 3, "-F", 3, "-S", 1, "-P", 0], "no conv gives output 3"),
    (["-i", 7, "-o", 3, "-F", 3, "-S", 1, "-P", 0, "--strict"], "no conv"),
    (["-i", 0, "-o", 3], "positive integer"),
    (["-i", 8, "-o", 3, "-F", 0], "positive integer"),
    (["relu", "-i", 8, "-o", 3], "conv and pool"),
    (["-i", 8, "-o", 3, "-P", -1], "non-negative"),
])
def test_impossible_constraints_exit_2(args, needle):
    res = run("solve", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["conv", "maxpool", "avgpool"]),
       st.sampled_from(["pytorch", "cs231n", "caffe", "darknet"]), st.integers(1, 2))
def test_every_solution_reproduces_the_size(n, m, kind, convention, max_dilation):
    try:
        r = solve(n, m, kind=kind, convention=convention, max_kernel=7,
                  max_dilation=max_dilation)
    except SpecError:
        return
    for s in r["solutions"]:
        opts = {"size": s["F"], "stride": s["S"], "pad": s["P"], "dilation": s["dilation"]}
        if kind == "conv":
            opts["filters"] = 1
        g = cnncalc.load({"input": f"{n}x{n}x1", "layers": [{kind: opts}]},
                         convention=convention)
        assert g.output_shape.w == m == g.output_shape.h
        if convention == "pytorch":
            res = out_size(n, s["F"], s["S"], s["P"], s["P"], s["dilation"],
                           ceil_mode=False)
            assert res.size == m and res.is_integer == s["exact"]
