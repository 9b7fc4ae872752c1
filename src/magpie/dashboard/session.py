"""The dashboard's session: a signed, expiring cookie naming a session kept in the store.

The cookie holds ``{session id, token hash, label, expiry, csrf secret}`` signed with
HMAC-SHA256 under a key derived from the store's secret key, so every process sharing the store
accepts it. It is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` when served over https). Each
request also checks the store (``accounts.session_live``): signing out ends the session for
every copy of the cookie, and revoking the admin token ends all of its sessions.

Every state-changing form carries a form token (``csrf``): the session's CSRF secret and a
one-time form id, fresh for each form drawn. The secret proves the form came from a page of
this session; the id makes a form sent twice act once (``accounts.claim_form``). The sign-in
form, which has no session yet, carries a nonce bound to a short-lived pre-session cookie.

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
    """A signed-in session as its cookie describes it.

    >>> session = Session(id="s1", token_hash="h", actor="ops", secret="x" * 32, expires=0)
    >>> token = session.csrf
    >>> session.form_id(token) == token.split(".")[1], session.form_id("x" * 32), session.form_id("guessed.1")
    (True, None, None)
    """

    id: str
    token_hash: str
    actor: str
    secret: str
    expires: int

    @property
    def csrf(self) -> str:
        """A new form token: the session's CSRF secret and a one-time form id."""
        return f"{self.secret}.{secrets.token_urlsafe(12)}"

    def form_id(self, submitted: str | None) -> str | None:
        """The one-time id of a form token of this session, or ``None`` when it is not one."""
        secret, _, form_id = str(submitted or "").partition(".")
        if not secret or not 8 <= len(form_id) <= 64 or not hmac.compare_digest(secret, self.secret):
            return None
        return form_id


def new_session_cookie(signer: Signer, *, session_id: str, token_hash: str, actor: str) -> str:
    return signer.dumps(
        {"s": session_id, "t": token_hash, "a": actor, "c": secrets.token_urlsafe(24)}, ttl=SESSION_SECONDS
    )


def read_session(signer: Signer, value: str | None) -> Session | None:
    data = signer.loads(value)
    if data is None or not all(isinstance(data.get(k), str) for k in ("s", "t", "a", "c")):
        return None
    return Session(id=data["s"], token_hash=data["t"], actor=data["a"], secret=data["c"], expires=data["exp"])


def cookie_flags(*, secure: bool, max_age: int) -> dict[str, Any]:
    return {"max_age": max_age, "httponly": True, "samesite": "strict", "secure": secure, "path": "/dashboard"}
