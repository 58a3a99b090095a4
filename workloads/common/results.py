"""Result files: one JSON document per bench task, stamped with the device it ran on and its provenance
(the GPU's UUID, model, clocks and power limit; the nxrun run and task; see provenance.py).

Written atomically (temporary file, then rename) so that a killed task never leaves a torn file that a
report or a cache entry could pick up.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from workloads.common import device, provenance

SCHEMA_VERSION = 1


def write_results(path: Path | str, payload: dict) -> dict:
    """Write `payload` plus `device`, `created` (UTC, ISO 8601), `schema` and (unless the payload has its
    own) `provenance` to `path`; return the document."""
    path = Path(path)
    document = {"schema": SCHEMA_VERSION,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "device": device.device_facts(), **payload}
    if "provenance" not in document:
        document["provenance"] = provenance.record(payload.get("gpu") or device.gpu_identity())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True, allow_nan=True)
            handle.write("\n")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return document


def load_results(paths: Iterable[Path | str] | Path | str) -> list[dict]:
    """Load result documents from files and/or folders (every *.json directly inside), sorted by path.

    Each document gets `_path` (where it came from). Files with an unknown schema raise ValueError.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for entry in map(Path, paths):
        files.extend(sorted(entry.glob("*.json")) if entry.is_dir() else [entry])
    documents = []
    for file in sorted(files):
        document = json.loads(file.read_text())
        if document.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"{file}: schema {document.get('schema')!r}, expected {SCHEMA_VERSION}; "
                             "re-run the bench task that wrote it")
        document["_path"] = str(file)
        documents.append(document)
    return documents
