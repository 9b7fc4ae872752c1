"""Secrets at rest: AES-GCM for phone numbers, SHA-256 hashes for keys and tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def hash_secret(value: str) -> str:
    # Keys are 192-bit random strings, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> str:
    return "mgp_" + secrets.token_urlsafe(24)


def new_admin_token() -> str:
    return "mga_" + secrets.token_urlsafe(32)


class Cipher:
    """AES-256-GCM with a random nonce per value; the nonce travels with the ciphertext.

    >>> c = Cipher(bytes(32))
    >>> c.decrypt(c.encrypt("+821012345678"))
    '+821012345678'
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._aead = AESGCM(key)

    def encrypt(self, text: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, text.encode(), b"magpie-phone")

    def decrypt(self, blob: bytes) -> str:
        return self._aead.decrypt(blob[:12], blob[12:], b"magpie-phone").decode()

    def blind_index(self, text: str) -> str:
        """A keyed hash to find a value by equality without storing it (a phone number from an opt-out)."""
        return hmac.new(self.key, b"magpie-phone-index:" + text.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def load(cls, *, secret_key: str | None, data_dir: Path) -> Cipher:
        """The key from ``MAGPIE_SECRET_KEY`` (base64, 32 bytes), else ``<data_dir>/secret.key``."""
        if secret_key:
            key = base64.urlsafe_b64decode(secret_key + "=" * (-len(secret_key) % 4))
            if len(key) != 32:
                raise ValueError("MAGPIE_SECRET_KEY must be 32 bytes, base64-encoded")
            return cls(key)
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            tmp = data_dir / f".secret.key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.urlsafe_b64encode(os.urandom(32)))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic: concurrent first starts agree on one key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(base64.urlsafe_b64decode(path.read_bytes().strip()))
