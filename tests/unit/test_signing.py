"""nxrun/store/signing.py: what the HMAC covers and where the key comes from. The round trip and
rejection of changed entries are pinned in tests/remote/test_breaker_signing.py."""

from __future__ import annotations

import pytest

from nxrun.store.signing import DEFAULT_KEY_ENV, BadSignature, sign_manifest, signing_key, verify_manifest

ETAG = "ab" * 16
MANIFEST = {"etag": ETAG, "task_id": "p:t", "outputs": [{"path": "out/x", "digest": "cd" * 16, "size": 3}],
            "log": "ef" * 16, "exit_code": 0}


def _signed(manifest: dict = MANIFEST, key: bytes = b"key") -> dict:
    return {**manifest, "signature": sign_manifest(ETAG, manifest, key)}


def test_signature_is_hex_sha256_and_ignores_an_existing_signature_field():
    plain = sign_manifest(ETAG, MANIFEST, b"key")
    assert len(plain) == 64 and int(plain, 16) >= 0
    assert sign_manifest(ETAG, {**MANIFEST, "signature": "anything"}, b"key") == plain


def test_a_field_this_version_does_not_know_is_covered_too():
    signed = _signed({**MANIFEST, "future_field": [1, 2]})
    verify_manifest(ETAG, signed, b"key")
    with pytest.raises(BadSignature):
        verify_manifest(ETAG, {**signed, "future_field": [1, 3]}, b"key")
    with pytest.raises(BadSignature):
        verify_manifest(ETAG, {k: v for k, v in signed.items() if k != "future_field"}, b"key")


def test_an_added_field_breaks_the_signature():
    with pytest.raises(BadSignature):
        verify_manifest(ETAG, {**_signed(), "mode": 0o4755}, b"key")


@pytest.mark.parametrize("signature", [None, "", 42, "é" * 64, "00" * 32])
def test_a_missing_malformed_or_wrong_signature_is_bad_not_a_crash(signature):
    with pytest.raises(BadSignature):
        verify_manifest(ETAG, {**MANIFEST, "signature": signature}, b"key")


def test_the_key_comes_from_the_named_variable_and_an_empty_one_means_unsigned(monkeypatch):
    monkeypatch.setenv(DEFAULT_KEY_ENV, "s3cret")
    monkeypatch.setenv("TEAM_CACHE_KEY", "other")
    assert signing_key() == b"s3cret"
    assert signing_key("TEAM_CACHE_KEY") == b"other"
    monkeypatch.setenv(DEFAULT_KEY_ENV, "")
    assert signing_key() is None
    monkeypatch.delenv("TEAM_CACHE_KEY")
    assert signing_key("TEAM_CACHE_KEY") is None
