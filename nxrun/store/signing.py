"""HMAC-SHA256 signatures of remote cache entries.

The signature covers the ETag and the manifest's canonical JSON (sorted keys, no spaces) without
its `signature` field, so it is checked against what was downloaded, never against a re-encoding
of fields this version happens to know. The key comes from an environment variable
(NXRUN_SIGNING_KEY unless `[remote] signing-key-env` names another) and is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

DEFAULT_KEY_ENV = "NXRUN_SIGNING_KEY"
_DOMAIN = b"nxrun-entry-signature-v1\0"


class BadSignature(Exception):
    """An entry is unsigned or its signature does not match: it counts as a miss."""


def signing_key(env_name: str | None = None) -> bytes | None:
    value = os.environ.get(env_name or DEFAULT_KEY_ENV)
    return value.encode("utf-8") if value else None


def _payload(etag: str, manifest: dict) -> bytes:
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _DOMAIN + etag.encode("ascii") + b"\0" + body.encode("utf-8")


def sign_manifest(etag: str, manifest: dict, key: bytes) -> str:
    return hmac.new(key, _payload(etag, manifest), hashlib.sha256).hexdigest()


def verify_manifest(etag: str, manifest: dict, key: bytes) -> None:
    """Raise BadSignature unless `manifest` carries a valid signature for `etag`."""
    signature = manifest.get("signature")
    if not isinstance(signature, str) or not signature:
        raise BadSignature("entry is not signed")
    expected = sign_manifest(etag, manifest, key)
    if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
        raise BadSignature("signature does not match (signed with another key, or modified)")
