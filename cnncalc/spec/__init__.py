"""Spec loading: YAML text → plain data with a source map of line numbers."""
from cnncalc.spec.loader import SourceMap, parse_yaml

__all__ = ["SourceMap", "parse_yaml"]
