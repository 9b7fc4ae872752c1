"""Firebase Cloud Messaging (HTTP v1) provider: service-account OAuth2 tokens, data-only sends, error mapping.

Hackle's Android SDK renders the notification itself from the ``hackle`` object, so every push is a
data message whose ``data.hackle`` is that object serialised as a JSON string.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from magpie.providers.base import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    PushMessage,
    SendResult,
    TokenInvalid,
    compact_json,
    json_member,
)

__all__ = ["FCM_SCOPE", "FcmProvider", "parse_retry_after"]

FCM_SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
_JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# Google accepts assertions valid for at most one hour.
_ASSERTION_LIFETIME: Final = 3600
_REFRESH_MARGIN: Final = 60.0
# FCM refuses a TTL above 28 days.
_MAX_TTL_SECONDS: Final = 28 * 24 * 3600
_SERVICE_ACCOUNT_FIELDS: Final = ("client_email", "private_key", "private_key_id", "token_uri")
_BAD_TOKEN_MESSAGE = re.compile(r"registration token.*not (?:a )?valid", re.IGNORECASE | re.DOTALL)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    >>> parse_retry_after("2", now=0.0)
    2.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0)
    20.0
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class _AccessToken:
    value: str
    refresh_at: float


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _GoogleError:
    status: str | None
    error_code: str | None
    message: str


def _parse_google_error(body: bytes) -> _GoogleError | None:
    """The ``google.rpc.Status`` inside an error body, or None when the body is not one."""
    error = json_member(body, "error")
    if not isinstance(error, dict):
        return None
    status = error.get("status")
    message = error.get("message")
    error_code: str | None = None
    details = error.get("details")
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
                code = detail.get("errorCode")
                if isinstance(code, str):
                    error_code = code
                    break
    return _GoogleError(
        status=status if isinstance(status, str) else None,
        error_code=error_code,
        message=message if isinstance(message, str) else "",
    )


# A token no device has: a check send with it can reach no one.
CHECK_TOKEN = "magpie-provider-check"


class FcmProvider:
    """Sends ``PushMessage``s through FCM HTTP v1 for one Firebase project."""

    name = "fcm"

    def __init__(
        self,
        *,
        project_id: str,
        service_account: Mapping[str, Any],
        session: aiohttp.ClientSession | None = None,
        base_url: str = "https://fcm.googleapis.com",
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        missing = [k for k in _SERVICE_ACCOUNT_FIELDS if not isinstance(service_account.get(k), str)]
        if missing:
            raise ValueError(f"service account is missing {', '.join(missing)}")
        key = load_pem_private_key(str(service_account["private_key"]).encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("service account private_key must be an RSA key")
        self.project_id = project_id
        self._key = key
        self._client_email = str(service_account["client_email"])
        self._key_id = str(service_account["private_key_id"])
        self._token_uri = str(service_account["token_uri"])
        self._send_url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._session = session
        # A session we create is ours to close; an injected one belongs to the caller.
        self._owns_session = session is None
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: _AccessToken | None = None
        self._token_lock = asyncio.Lock()

    async def send(self, message: PushMessage) -> SendResult:
        body = compact_json({"message": self._message_object(message)})
        token = await self._access_token()
        reply = await self._post_message(body, token)
        if reply.status == 401:
            # The token may have been revoked or expired early: fetch a fresh one and try once more.
            self._forget_token(token)
            token = await self._access_token()
            reply = await self._post_message(body, token)
        if 200 <= reply.status < 300:
            return SendResult(provider_message_id=self._message_name(reply.body))
        raise self._send_error(reply)

    async def check(self, token: str | None = None) -> str:
        """Validate the credentials without notifying anyone: an access token, then a ``validate_only`` send.

        Without a device ``token`` a placeholder is sent; FCM refusing it as a token (and not the
        credentials or the project) means the credentials work.
        """
        # Shaped like every message magpie sends (a data message carrying Hackle's payload), so the
        # check covers what sends would be refused for; validate_only means it is never delivered.
        probe = PushMessage(
            token=token or CHECK_TOKEN,
            provider_type="FCM",
            title="",
            body="",
            hackle={},
            ttl_seconds=0,
            high_priority=False,
        )
        message = self._message_object(probe)
        access = await self._access_token()
        reply = await self._post_message(compact_json({"validate_only": True, "message": message}), access)
        if 200 <= reply.status < 300:
            return f"project {self.project_id}: credentials accepted, validate_only send accepted"
        error = self._send_error(reply)
        if token is None and isinstance(error, TokenInvalid):
            return f"project {self.project_id}: credentials accepted (the placeholder token was refused, as expected)"
        raise error

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- message ---------------------------------------------------------------------------------

    @staticmethod
    def _message_object(message: PushMessage) -> dict[str, Any]:
        data = {key: str(value) for key, value in message.extra_data.items()}
        # Set last so extra_data can never shadow the object the SDK renders from.
        data["hackle"] = compact_json(message.hackle).decode()
        ttl = min(max(int(message.ttl_seconds), 0), _MAX_TTL_SECONDS)
        android: dict[str, Any] = {
            "priority": "HIGH" if message.high_priority else "NORMAL",
            "ttl": f"{ttl}s",
        }
        if message.collapse_id:
            android["collapse_key"] = message.collapse_id
        return {"token": message.token, "data": data, "android": android}

    @staticmethod
    def _message_name(body: bytes) -> str | None:
        name = json_member(body, "name")
        return name if isinstance(name, str) else None

    # -- HTTP ------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _post(self, url: str, what: str, **kwargs: Any) -> _Reply:
        try:
            async with self._http().post(url, timeout=self._timeout, allow_redirects=False, **kwargs) as response:
                body = await response.read()
                return _Reply(response.status, response.headers, body)
        except TimeoutError as exc:
            raise ProviderUnavailable("TIMEOUT", f"{what} timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable("CONNECTION_ERROR", f"{what}: {exc!r}") from exc

    async def _post_message(self, body: bytes, token: str) -> _Reply:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        return await self._post(self._send_url, "FCM send", data=body, headers=headers)

    def _send_error(self, reply: _Reply) -> ProviderError:
        status = reply.status
        retry_after = parse_retry_after(reply.headers.get("Retry-After"), now=self._clock())
        error = _parse_google_error(reply.body)
        if error is None:
            text = reply.body[:200].decode(errors="replace")
            if status == 429 or status >= 500:
                return ProviderUnavailable(f"HTTP_{status}", text, retry_after=retry_after)
            return ProviderRejected(f"HTTP_{status}", text)
        code = error.error_code or error.status or f"HTTP_{status}"
        message = error.message
        if error.error_code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
            return TokenInvalid(error.error_code, message)
        if status == 429 or code in ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"):
            return ProviderUnavailable("QUOTA_EXCEEDED", message, retry_after=retry_after)
        if status >= 500 or code in ("UNAVAILABLE", "INTERNAL"):
            return ProviderUnavailable(code, message, retry_after=retry_after)
        if code == "INVALID_ARGUMENT" and _BAD_TOKEN_MESSAGE.search(message):
            return TokenInvalid("INVALID_ARGUMENT", message)
        return ProviderRejected(code, message)

    # -- OAuth2 ----------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        async with self._token_lock:
            # Whoever held the lock may have refreshed it already; share that result.
            token = self._token
            if token is None or self._clock() >= token.refresh_at:
                token = await self._fetch_token()
                self._token = token
            return token.value

    def _forget_token(self, value: str) -> None:
        # Only drop the token that failed, so concurrent 401s trigger one refresh, not many.
        if self._token is not None and self._token.value == value:
            self._token = None

    def _assertion(self, now: float) -> str:
        iat = int(now)
        claims = {
            "iss": self._client_email,
            "scope": FCM_SCOPE,
            "aud": self._token_uri,
            "iat": iat,
            "exp": iat + _ASSERTION_LIFETIME,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._key_id})

    async def _fetch_token(self) -> _AccessToken:
        now = self._clock()
        form = {"grant_type": _JWT_BEARER_GRANT, "assertion": self._assertion(now)}
        reply = await self._post(self._token_uri, "OAuth2 token request", data=form)
        text = reply.body[:200].decode(errors="replace")
        if reply.status == 429 or reply.status >= 500:
            retry_after = parse_retry_after(reply.headers.get("Retry-After"), now=self._clock())
            raise ProviderUnavailable("AUTH_UNAVAILABLE", text, retry_after=retry_after)
        if reply.status >= 300:
            raise ProviderRejected("AUTH_ERROR", f"token endpoint answered {reply.status}: {text}")
        try:
            doc = json.loads(reply.body)
            value = doc["access_token"]
            lifetime = float(doc.get("expires_in", _ASSERTION_LIFETIME))
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            raise ProviderUnavailable("AUTH_UNAVAILABLE", f"unreadable token response: {text}") from exc
        if not isinstance(value, str) or not value:
            raise ProviderUnavailable("AUTH_UNAVAILABLE", "token response has no access_token")
        # Refresh a minute early; very short lifetimes (tests, odd proxies) refresh at half-life.
        return _AccessToken(value, now + max(lifetime - _REFRESH_MARGIN, lifetime / 2))
