"""What an attacker who reads nxrun's output, index or remote manifests could try: hash every
candidate value with unkeyed hashes (the old env-digest scheme among them) and look for a match.

Shared by the env-secrecy tests of tests/core and tests/remote.
"""

from __future__ import annotations

import hashlib
import re

import xxhash

_HEX = re.compile(r"[0-9a-f]{16,}")


def _unkeyed_digests(value: str) -> list[str]:
    digests = []
    for text in (value, "=" + value, value + "\n", "\0" + value):
        data = text.encode()
        digests += [xxhash.xxh3_128_hexdigest(data), xxhash.xxh3_64_hexdigest(data), xxhash.xxh64_hexdigest(data),
                    hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest(),
                    hashlib.blake2b(data).hexdigest(), hashlib.blake2b(data, digest_size=16).hexdigest()]
    return digests


def matching_candidates(text: str, candidates) -> list[str]:
    """Candidates whose unkeyed digest (whole, or the 16-character prefix `show` prints) occurs in
    `text`."""
    prefixes = {token[:16] for token in _HEX.findall(text.lower())}
    return [value for value in candidates if any(d[:16] in prefixes for d in _unkeyed_digests(value))]


def etag_candidates(components: dict[str, str], etag: str, component: str, candidates) -> list[str]:
    """Candidates that reproduce `etag` when the old scheme's digest of the value (xxh3-128 of
    '=' + value) is put in for `component`: the explain manifest and the ETag together must not
    allow this either."""
    from nxrun.hashing import etag_of

    trial = dict(components)
    found = []
    for value in candidates:
        trial[component] = xxhash.xxh3_128_hexdigest(("=" + value).encode())
        if etag_of(trial) == etag:
            found.append(value)
    return found


PINS = [f"{n:04d}" for n in range(10_000)]
