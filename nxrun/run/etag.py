"""What a task's ETag would be now, without a run: its explain manifest and ETag with upstream
tasks' outputs taken as the workspace has them. An upstream task stands for its cache entry's
output digest when its own current ETag is in the local cache (and the entry may be used), else
for a scan of its outputs on disk; an aggregate task for its dependencies' digests.

`show`, `why` and the graph page ask this (CurrentETags.for_views); the scheduler asks it for the
dependencies of `--only` tasks, restoring their entries as it goes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..hashing import digest_text, etag_of
from ..store import CacheEntry
from ..store.capture import digest_of_records, scan_outputs


def aggregate_digest(dep_digests: dict) -> str:
    """An aggregate task has no outputs of its own: it stands for its dependencies' outputs."""
    return digest_text("\n".join(f"{k}={v}" for k, v in sorted(dep_digests.items())))


class CurrentETags:
    def __init__(self, graph, store, hasher, stat_cache, after_hash: Callable[[], object] | None = None,
                 use_entry: Callable[[object, CacheEntry], bool] | None = None):
        """`hasher`: a hashing.TaskHasher; `after_hash`: called after each task is hashed (the
        scheduler forgets the input stats it recorded); `use_entry(task, entry)`: whether a cached
        upstream entry may stand for the task's outputs (the scheduler restores it first)."""
        self.graph = graph
        self.root = graph.workspace.root
        self.store = store
        self.hasher = hasher
        self.stat_cache = stat_cache
        self.after_hash = after_hash
        self.use_entry = use_entry
        self.warnings: list[str] = []

    @classmethod
    def for_views(cls, graph, store, warn: Callable[[str], None] | None = None) -> CurrentETags:
        """For a read-only view: the stat cache as stored, runtime probes run as a run would, the
        env key of the local cache (a configured remote's key is asked for when needed)."""
        from ..hashing import InputMemo, StatCache, TaskHasher
        from ..runtime import Runtime
        from ..store.keys import EnvKeySource

        root = graph.workspace.root
        if warn is not None:
            store.uncached_on_disk_problems(warn)
        stat_cache = StatCache(store.load_stat_cache(under=str(root)))
        runtime = Runtime(graph.workspace.runtime, str(root))
        env_key = EnvKeySource(store, graph.workspace, None, warn=warn)
        hasher = TaskHasher(root, graph.file_index, stat_cache, runtime, env_key, memo=InputMemo())
        return cls(graph, store, hasher, stat_cache)

    def outputs_digest(self, task_id: str, memo: dict | None = None) -> str:
        """The output digest the task stands for now. Pass one `memo` dict to successive calls to
        hash each upstream task once."""
        memo = {} if memo is None else memo
        if task_id in memo:
            return memo[task_id]
        task = self.graph.tasks[task_id]
        dep_digests = {d: self.outputs_digest(d, memo) for d in task.deps}
        if task.is_aggregate:
            digest = aggregate_digest(dep_digests)
        else:
            components, _ = self.hasher.components(task, dep_digests)
            if self.after_hash is not None:
                self.after_hash()
            entry = self.store.get_hit(etag_of(components)) if task.cache != "never" else None
            if entry is not None and (self.use_entry is None or self.use_entry(task, entry)):
                digest = entry.outputs_digest
            else:
                records, _missing = scan_outputs(self.root, task.outputs, self.stat_cache, None)
                digest = digest_of_records(records)
        memo[task_id] = digest
        return digest

    def explain(self, task_id: str, memo: dict | None = None) -> tuple[dict[str, str], str]:
        """The task's current explain manifest and ETag (its hashing warnings go to `warnings`)."""
        task = self.graph.tasks[task_id]
        memo = {} if memo is None else memo
        dep_digests = {d: self.outputs_digest(d, memo) for d in task.deps}
        components, warnings = self.hasher.components(task, dep_digests)
        if self.after_hash is not None:
            self.after_hash()
        self.warnings.extend(warnings)
        return components, etag_of(components)
