"""The secret key that env values, values a target sets and args after `--` are hashed with before
they enter an ETag (hashing.keyed_digest), so that a digest `show` prints, the index keeps or a
remote manifest carries says nothing about a value, however few values it could take.

Every machine that shares entries must use the same key, or tasks with such inputs never hit each
other. The key is, in this order:

1. `NXRUN_ENV_KEY`, a secret the team sets on every machine (like NXRUN_SIGNING_KEY). Then nobody
   without it learns anything from the index or the remote.
2. With a remote cache, the key that remote keeps at `<prefix>/env-key`: the first run that may
   write makes it with a write-once PUT (never a dry run, `show` or `why`), every machine reads back
   the one that won and keeps a copy in its local cache (`keys/remote-<id>`), so later runs, `show`
   and `why` make no request.
   Anyone who can read that object can read the key: this protects digests that leave the bucket
   (an index, a manifest in a log), not against readers of the bucket. Set NXRUN_ENV_KEY for that.
3. Otherwise this cache's own key (`<cache-dir>/keys/cache`, mode 0600, made once): workspaces
   sharing the cache agree, and nothing outside the cache can be matched against its digests.

When a remote is configured but its key cannot be had (an outage, a read-only job before any
writer made it, `--remote=off` before this cache ever read it), the cache's own key is used for
that run, with a warning: tasks with such inputs then miss the remote instead of sharing it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import xxhash

from ..hashing import blake2b

ENV_KEY_VAR = "NXRUN_ENV_KEY"
_TEAM_PERSON = b"nxrun-team-key"


def team_key(secret: str) -> bytes:
    """The 32-byte key derived from NXRUN_ENV_KEY (any length, any text)."""
    return blake2b(secret.encode("utf-8", "surrogateescape"), digest_size=32, person=_TEAM_PERSON).digest()


def configured_remote_url(workspace) -> str | None:
    return os.environ.get("NXRUN_REMOTE") or (getattr(workspace, "remote", None) or {}).get("url") or None


def remote_key_name(url: str) -> str:
    """The local copy's file name: one per remote bucket and prefix, whatever its namespaces (and
    whatever endpoint reaches it: `show` in a shell without the endpoint's variables still finds it)."""
    return "remote-" + xxhash.xxh3_128_hexdigest(url.rstrip("/").encode())


class EnvKeySource:
    """A callable returning the env key, resolved on its first call (a run whose tasks have no
    env inputs, set env values or args never reads a key) and then remembered."""

    def __init__(self, store, workspace, remote=None, contact: bool = True, create: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.store = store
        self.workspace = workspace
        self.remote = remote            # an open store.tiered.RemoteCache, or None
        self.contact = contact          # may open the remote when it is not open (show, why)
        self.create = create            # may make the remote's key when it has none (a run, not a dry run)
        self.warn = warn
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._resolve()
            return self._key

    def _resolve(self) -> bytes:
        secret = os.environ.get(ENV_KEY_VAR)
        if secret:
            return team_key(secret)
        url = configured_remote_url(self.workspace)
        if not url:
            return self._own_key()
        name = remote_key_name(url)
        key = self.store.read_key(name)
        if key is not None:
            return key
        key, why = self._from_remote(url)
        if key is not None:
            try:
                self.store.write_key(name, key)
            except OSError:         # not kept (a full disk, say): read from the remote again next time
                pass
            return key
        self._say(f"env values are hashed with this cache's own key in this run: {why}. Tasks with env inputs, "
                  f"set env values or args will not share entries with other machines through {url}. Set "
                  f"{ENV_KEY_VAR} to one secret on every machine to share them (docs/remote-cache.md).")
        return self._own_key()

    def _own_key(self) -> bytes:
        try:
            return self.store.own_key()
        except OSError as exc:
            from ..errors import NxrunError

            raise NxrunError(f"cannot make the key env values are hashed with in {self.store.keys_dir}: "
                             f"{exc.strerror or exc}. Free space or fix the cache folder's permissions, or set "
                             f"{ENV_KEY_VAR}.") from None

    def _from_remote(self, url: str) -> tuple[bytes | None, str]:
        if self.remote is not None:
            return self.remote.shared_env_key(self.create)
        if not self.contact:
            return None, "the remote's env-key has not been read by this cache yet and the remote is off"
        from .tiered import open_remote

        remote = open_remote(url, self.workspace, required=False, namespace=None, console=None)
        try:
            return remote.shared_env_key(self.create)
        finally:
            remote.close()

    def _say(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)
        else:
            import sys

            print(f"warning: {message}", file=sys.stderr)
