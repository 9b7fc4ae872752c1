"""The dashboard's session: a signed, expiring cookie naming the admin token that signed in.

The cookie holds ``{token hash, label, expiry, csrf}`` signed with HMAC-SHA256 under a key
derived from the store's secret key, so every process sharing the store accepts it. It is
``HttpOnly`` and ``SameSite=Strict`` (``Secure`` when served over https). Each request also
checks that the admin token is still live: revoking the token ends its sessions.

Every state-changing form carries the session's CSRF token (``csrf``); the sign-in form, which
has no session yet, carries one bound to a short-lived pre-session cookie.

>>> signer = Signer(b"k" * 32)
>>> cookie = signer.dumps({"a": 1}, ttl=60, now=0)
>>> signer.loads(cookie, now=30)
{'a': 1, 'exp': 60}
>>> signer.loads(cookie, now=60) is None, signer.loads(cookie[:-1] + "x", now=30) is None
(True, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgspec

SESSION_COOKIE = "magpie_session"
LOGIN_COOKIE = "magpie_login"
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 15 * 60


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Sign and check small JSON documents with an expiry (``exp``, epoch seconds)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"magpie dashboard session v1", hashlib.sha256).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def dumps(self, data: dict[str, Any], *, ttl: int, now: float | None = None) -> str:
        stamped = {**data, "exp": int((time.time() if now is None else now) + ttl)}
        payload = _b64(msgspec.json.encode(stamped))
        return f"{payload}.{self._mac(payload)}"

    def loads(self, value: str | None, *, now: float | None = None) -> dict[str, Any] | None:
        """The document, or ``None`` when the value is missing, tampered with or expired."""
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = msgspec.json.decode(_unb64(payload))
        except (msgspec.DecodeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        if data["exp"] <= (time.time() if now is None else now):
            return None
        return data


@dataclass(frozen=True)
class Session:
    token_hash: str
    actor: str
    csrf: str
    expires: int

    def csrf_ok(self, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(str(submitted), self.csrf)


def new_session_cookie(signer: Signer, *, token_hash: str, actor: str) -> str:
    return signer.dumps({"t": token_hash, "a": actor, "c": secrets.token_urlsafe(24)}, ttl=SESSION_SECONDS)


def read_session(signer: Signer, value: str | None) -> Session | None:
    data = signer.loads(value)
    if data is None or not all(isinstance(data.get(k), str) for k in ("t", "a", "c")):
        return None
    return Session(token_hash=data["t"], actor=data["a"], csrf=data["c"], expires=data["exp"])


def cookie_flags(*, secure: bool, max_age: int) -> dict[str, Any]:
    return {"max_age": max_age, "httponly": True, "samesite": "strict", "secure": secure, "path": "/dashboard"}
