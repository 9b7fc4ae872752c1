"""Secrets at rest: AES-GCM for phone numbers, SHA-256 hashes for keys and tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from magpie.store.db import PRIVATE_FILE_MODE, private_dir


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
        """The key from ``MAGPIE_SECRET_KEY`` (base64, 32 bytes), else ``<data_dir>/secret.key``.

        Raises ``BadSecretKey`` (one line, naming where the key came from) when it is not such a key.
        """
        if secret_key:
            return cls(parse_key(secret_key, where="MAGPIE_SECRET_KEY"))
        private_dir(data_dir)
        path = data_dir / "secret.key"
        if not path.exists():
            tmp = data_dir / f".secret.key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.urlsafe_b64encode(os.urandom(KEY_BYTES)))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic: concurrent first starts agree on one key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(read_key_file(path))


KEY_BYTES = 32


class BadSecretKey(ValueError):
    """A secret key that is not 32 bytes in URL-safe base64; the text says where it came from."""


def parse_key(text: str | bytes, *, where: str) -> bytes:
    """The 32-byte key that ``text`` (URL-safe base64, padding optional) encodes.

    >>> len(parse_key(base64.urlsafe_b64encode(bytes(32)), where="test"))
    32
    >>> parse_key("abc", where="secret.key")
    Traceback (most recent call last):
    ...
    magpie.store.crypto.BadSecretKey: secret.key is not a secret key: 32 bytes in URL-safe base64 expected
    """
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip()
    try:
        key = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise BadSecretKey(f"{where} is not a secret key: {KEY_BYTES} bytes in URL-safe base64 expected")
    return key


def read_key_file(path: Path) -> bytes:
    """The key in a ``secret.key`` file (the file may be a link, as mounted secrets are)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise BadSecretKey(f"{path}: cannot read the secret key: {exc.strerror}") from None
    return parse_key(text, where=str(path))
