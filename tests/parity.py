"""Comparing embedfn's numbers with the reference, and remembering the largest differences so
the test run can report them (see `pytest_terminal_summary` in conftest.py)."""

import os

import numpy as np

TOL = 1e-5
#: test name -> largest absolute difference seen in it
LARGEST = {}


def close(actual, expected, tol=TOL):
    """Asserts `actual` is within `tol` of `expected` element-wise; returns the max difference."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    assert diff <= tol, f"max abs difference {diff:.3g} > {tol}"
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    LARGEST[test] = max(LARGEST.get(test, 0.0), diff)
    return diff
