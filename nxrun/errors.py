"""Errors users see: each says what was wrong, where, and what to do about it."""

from __future__ import annotations


class NxrunError(Exception):
    """An error with a message meant for the user; the CLI prints it without a traceback."""

    exit_code = 2


class ConfigError(NxrunError):
    """Something in an nxrun.toml is wrong; the message names file:line and the fix."""


class GraphError(NxrunError):
    """The task graph cannot be built: a missing dependency, a cycle, an unknown task."""


class ProbeError(NxrunError):
    """A `runtime:` probe command failed."""


def did_you_mean(word: str, choices, *, prefix: str = " Did you mean ") -> str:
    """A ' Did you mean X?' suffix when a close match exists, else ''."""
    import difflib

    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"{prefix}'{matches[0]}'?" if matches else ""


class OutputNotWritten(NxrunError):
    """A run's output could not be written (a full disk, a closed file); its tasks ran and were
    cached as usual."""

    exit_code = 1
