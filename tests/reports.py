"""Figures tests measure on the way (not asserted against times), printed at the end of the run
by `pytest_terminal_summary` in conftest.py."""

#: lines to print, in the order they were added
LINES = []
