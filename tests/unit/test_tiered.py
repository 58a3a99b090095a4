"""nxrun/store/tiered.py: the write and read namespaces of a remote cache."""

from __future__ import annotations

import pytest

from nxrun.errors import ConfigError
from nxrun.store.tiered import normalize_namespace


@pytest.mark.parametrize("name, expected", [
    ("trusted", "trusted"),
    ("scratch/my-branch", "scratch/my-branch"),
    ("/trusted/", "trusted"),
    ("  scratch/x  ", "scratch/x"),
    ("scratch//x", "scratch/x"),                        # empty parts are dropped
    ("refs/heads/feature/x", "heads/feature/x"),        # a git ref loses its refs/ prefix
    ("refs/pull/42/merge", "pull/42/merge"),
    ("scratch/fix: the bug!", "scratch/fix--the-bug-"),  # other characters become '-'
    ("scratch/v1.2_rc", "scratch/v1.2_rc"),
])
def test_namespace_names_are_normalised(name: str, expected: str):
    assert normalize_namespace(name) == expected


@pytest.mark.parametrize("name", ["", "/", "..", "scratch/..", "scratch/./x", "-x", "scratch/.hidden", "a/../b"])
def test_unusable_namespaces_are_config_errors_with_an_example(name: str):
    with pytest.raises(ConfigError) as caught:
        normalize_namespace(name)
    assert "not usable" in str(caught.value) and "'trusted'" in str(caught.value)

