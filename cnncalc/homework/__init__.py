"""Homework tools: the one-line layer calculator, worked formulas, answer checking, 2-D
convolution by hand and the inverse (F, S, P) problem.

Library code only (plain data in and out, :class:`cnncalc.CnnCalcError` on bad input); the CLI
in :mod:`cnncalc.cli.homework` renders it. Every shape, count and receptive field comes from the
analyzer's layer rules through :func:`cnncalc.load`.
"""
from cnncalc.homework.calc import layer_calc
from cnncalc.homework.check import check
from cnncalc.homework.conv2d import conv2d, parse_matrix
from cnncalc.homework.explain import explain, explain_node
from cnncalc.homework.solve import solve

__all__ = ["check", "conv2d", "explain", "explain_node", "layer_calc", "parse_matrix", "solve"]
