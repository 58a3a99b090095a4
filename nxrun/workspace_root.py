"""Where a workspace is: its root folder (found from any folder inside it) and, by a quick look at
the root nxrun.toml, its cache folder. Kept apart from config.py so that the run journal and the
graph snapshot find both without importing the config parser."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

CONFIG_NAME = "nxrun.toml"


def find_workspace_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding an nxrun.toml with a [workspace] table,
    else the nearest holding any nxrun.toml."""
    root = _find_workspace_root(start.resolve())
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        # the index, the snapshot and the task locks keep paths as UTF-8 text
        raise ConfigError(f"the workspace path {os.fsencode(root)!r} is not valid UTF-8 (nxrun keeps workspace paths "
                          "as UTF-8 text in its cache): rename or move the folder to a UTF-8 name.") from None
    return root


def _find_workspace_root(start: Path) -> Path:
    nearest = None
    for folder in [start, *start.parents]:
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            if nearest is None:
                nearest = folder
            try:
                head = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if re.search(r"^\s*\[workspace\]", head, re.MULTILINE):
                return folder
    if nearest is None:
        raise ConfigError(f"no {CONFIG_NAME} found in {start} or any parent folder. "
                          "Run `nxrun init` to create one, or cd into a workspace.")
    return nearest


def cache_dir_guess(root: Path, root_bytes: bytes) -> Path:
    """The cache folder as far as a quick look at the root nxrun.toml (`root_bytes`) can tell:
    NXRUN_CACHE_DIR, else a plain `cache-dir = "..."` line, else `.nxrun`. Only ever a place to
    look: whatever is found there is checked against the config it was made from."""
    configured = os.environ.get("NXRUN_CACHE_DIR")
    if not configured:
        match = re.search(rb'^\s*cache-dir\s*=\s*"([^"\n]+)"', root_bytes, re.M)
        configured = match.group(1).decode("utf-8", "replace") if match else ".nxrun"
    return (root / configured).resolve()
