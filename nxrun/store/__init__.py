"""Cache stores: entries by ETag, blobs by digest; a local backend and a remote one behind it.

`local.py` keeps blobs on disk and entries in sqlite; remote backends sit beside it and
`tiered.py` puts them together. A cache entry is the manifest of one successful task run.
"""

from __future__ import annotations

import json

from ..records import as_dict, default_factory, field_names, record

ENTRY_FORMAT = 1


class CorruptBlob(Exception):
    """A blob's contents do not hash to its name: the entry that needs it counts as a miss."""


class UnsafeEntry(Exception):
    """An entry would write outside its task's outputs (absolute path, '..', an escaping symlink,
    setuid bits): it is rejected whole."""


@record
class OutputRecord:
    path: str                  # workspace-relative posix path
    kind: str                  # "file" | "symlink" | "dir"
    digest: str | None = None  # blob digest of a file's contents
    size: int = 0
    mode: int = 0o644
    target: str | None = None  # a symlink's target, as written

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


@record
class CacheEntry:
    etag: str
    task_id: str
    outputs: list[OutputRecord]
    declared_outputs: list[str]
    outputs_digest: str
    log_digest: str | None
    exit_code: int = 0
    duration: float = 0.0
    created: float = 0.0
    runtime_facts: dict[str, str] = default_factory(dict)
    explain: dict[str, str] = default_factory(dict)
    format: int = ENTRY_FORMAT
    signature: str | None = None

    def blob_digests(self) -> list[str]:
        digests = [o.digest for o in self.outputs if o.kind == "file" and o.digest]
        if self.log_digest:
            digests.append(self.log_digest)
        return list(dict.fromkeys(digests))

    def total_size(self) -> int:
        return sum(o.size for o in self.outputs if o.kind == "file")

    # when the local index last handed this entry out (not part of the manifest)
    last_used = 0.0

    def to_json(self, explain: bool = True) -> str:
        data = as_dict(self)
        if not explain:
            del data["explain"]   # the local index keeps explain manifests in a table of their own
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CacheEntry:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != ENTRY_FORMAT:
            raise ValueError("not an nxrun cache entry of a known format")
        data["outputs"] = [OutputRecord(**o) for o in data.get("outputs", [])]
        return cls(**{k: v for k, v in data.items() if k in _ENTRY_FIELDS})


def encode_explain(explain: dict[str, str]) -> str:
    return json.dumps(explain, sort_keys=True, separators=(",", ":"))


_ENTRY_FIELDS = frozenset(field_names(CacheEntry))
