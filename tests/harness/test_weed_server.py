"""tests/remote/weed_server.py: the S3 test server's binary is found where pip put it, also when
the virtual environment's bin/ is not on PATH (the README runs `.venv/bin/python -m pytest`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "remote"))   # as tests/remote/conftest.py does
import weed_server  # noqa: E402


@pytest.fixture
def venv_bin(tmp_path: Path, monkeypatch) -> Path:
    """An interpreter in a bin/ folder that is not on PATH."""
    folder = tmp_path / "venv" / "bin"
    folder.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(folder / "python"))
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    return folder


def _program(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_weed_beside_the_interpreter_is_found_without_path(venv_bin: Path):
    weed = _program(venv_bin / "weed")
    assert weed_server.weed_binary() == str(weed)


def test_a_file_that_is_not_executable_is_not_taken(venv_bin: Path, tmp_path: Path, monkeypatch):
    _program(venv_bin / "weed", mode=0o644)
    on_path = tmp_path / "path-bin"
    on_path.mkdir()
    monkeypatch.setattr(weed_server.sysconfig, "get_path", lambda *args, **kwargs: str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(on_path))
    assert weed_server.weed_binary() is None
    weed = _program(on_path / "weed")
    assert weed_server.weed_binary() == str(weed)          # PATH is the last place looked
