"""Tests of the graph page, history and report."""
