"""Apple Push Notification service provider: ES256 token auth over HTTP/2, alert pushes, error mapping.

The payload carries the ``hackle`` object beside ``aps`` with ``mutable-content`` set, so Hackle's
notification service extension can enrich the alert on the device.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import h2.exceptions
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey
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
from magpie.providers.fcm import parse_retry_after

__all__ = ["MAX_PAYLOAD_BYTES", "ApnsProvider"]

MAX_PAYLOAD_BYTES: Final = 4096
_MAX_COLLAPSE_ID_BYTES: Final = 64
# Apple refuses provider tokens older than an hour and throttles refreshes more often than every 20 min.
_MIN_TOKEN_TTL: Final = 20 * 60
_MAX_TOKEN_TTL: Final = 60 * 60
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]+")
_DEAD_TOKEN_REASONS: Final = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})
_STALE_PROVIDER_TOKEN_REASONS: Final = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


@dataclass(frozen=True, slots=True)
class _ProviderToken:
    value: str
    issued_at: float


def _reason(body: bytes) -> str | None:
    reason = json_member(body, "reason")
    return reason if isinstance(reason, str) else None


def _truncate_utf8(value: str, limit: int) -> str:
    # Cut on a byte budget without leaving half a character behind.
    return value.encode()[:limit].decode(errors="ignore")


def _canonical_uuid(value: str) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


# A well-formed token no device has, and the answers that mean only the token was refused.
CHECK_TOKEN = "0" * 64
_CHECK_TOKEN_REASONS = ("BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic")


class ApnsProvider:
    """Sends ``PushMessage``s to one app (``topic``) through APNs with a .p8 signing key."""

    name = "apns"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str,
        topic: str,
        client: httpx.AsyncClient | None = None,
        base_url: str = "https://api.push.apple.com",
        clock: Callable[[], float] = time.time,
        token_ttl_seconds: float = 1800,
    ) -> None:
        if not _MIN_TOKEN_TTL <= token_ttl_seconds <= _MAX_TOKEN_TTL:
            raise ValueError("token_ttl_seconds must be between 1200 and 3600")
        key = load_pem_private_key(private_key.encode(), password=None)
        if not isinstance(key, EllipticCurvePrivateKey) or not isinstance(key.curve, SECP256R1):
            raise ValueError("private_key must be an EC P-256 key (an APNs .p8 key)")
        self.topic = topic
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        self._base_url = base_url.rstrip("/")
        self._client = client
        # A client we create is ours to close; an injected one belongs to the caller.
        self._owns_client = client is None
        self._clock = clock
        self._token_ttl = token_ttl_seconds
        self._token: _ProviderToken | None = None

    async def send(self, message: PushMessage) -> SendResult:
        if not _DEVICE_TOKEN.fullmatch(message.token):
            # A non-hex token can never be valid, and must not be spliced into the request path.
            raise TokenInvalid("BadDeviceToken", "device token is not hexadecimal")
        payload = self._payload(message)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ProviderRejected(
                "PAYLOAD_TOO_LARGE", f"payload is {len(payload)} bytes, APNs allows {MAX_PAYLOAD_BYTES}"
            )
        url = f"{self._base_url}/3/device/{message.token}"
        headers = self._headers(message)
        token = self._provider_token()
        response = await self._post(url, payload, headers, token)
        if response.status_code == 403 and _reason(response.content) in _STALE_PROVIDER_TOKEN_REASONS:
            self._forget_token(token)
            response = await self._post(url, payload, headers, self._provider_token())
        if response.status_code == 200:
            return SendResult(provider_message_id=response.headers.get("apns-id"))
        raise self._error(response)

    async def check(self) -> str:
        """Check the connection, the signing key and the topic without notifying anyone.

        A silent background push goes to a token no device has: APNs refusing that token (and not
        the provider token or the topic) means the credentials work.
        """
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "background",
            "apns-priority": "5",
            "apns-expiration": "0",
        }
        payload = compact_json({"aps": {"content-available": 1}})
        response = await self._post(
            f"{self._base_url}/3/device/{CHECK_TOKEN}", payload, headers, self._provider_token()
        )
        reason = _reason(response.content)
        if response.status_code == 200 or response.status_code == 410 or reason in _CHECK_TOKEN_REASONS:
            return f"topic {self.topic}: connection made, provider token and topic accepted"
        raise self._error(response)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- request ---------------------------------------------------------------------------------

    @staticmethod
    def _payload(message: PushMessage) -> bytes:
        return compact_json(
            {
                "aps": {
                    "alert": {"title": message.title, "body": message.body},
                    "sound": "default",
                    "mutable-content": 1,
                },
                "hackle": message.hackle,
            }
        )

    def _headers(self, message: PushMessage) -> dict[str, str]:
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.high_priority else "5",
            # 0 tells APNs to try once and not store the push, which is what a zero TTL means.
            "apns-expiration": str(int(self._clock()) + message.ttl_seconds) if message.ttl_seconds > 0 else "0",
        }
        if message.collapse_id:
            headers["apns-collapse-id"] = _truncate_utf8(message.collapse_id, _MAX_COLLAPSE_ID_BYTES)
        apns_id = _canonical_uuid(message.delivery_id)
        if apns_id is not None:
            headers["apns-id"] = apns_id
        return headers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(http2=True, timeout=httpx.Timeout(10.0))
        return self._client

    async def _post(self, url: str, payload: bytes, headers: dict[str, str], token: str) -> httpx.Response:
        try:
            # Encoded here because httpx encodes str header values as ASCII, and a collapse id may not be.
            raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
            raw_headers.append((b"authorization", f"bearer {token}".encode()))
            return await self._http().post(url, content=payload, headers=raw_headers)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable("TIMEOUT", "APNs request timed out") from exc
        except (httpx.HTTPError, h2.exceptions.H2Error, OSError) as exc:
            # httpcore wraps most HTTP/2 failures, but a reset mid-stream can surface as a raw h2 error.
            raise ProviderUnavailable("CONNECTION_ERROR", f"APNs: {exc!r}") from exc

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        reason = _reason(response.content)
        code = reason or f"HTTP_{status}"
        if status == 410 or reason in _DEAD_TOKEN_REASONS:
            return TokenInvalid(reason or "Unregistered")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self._clock())
            return ProviderUnavailable(code, retry_after=retry_after)
        return ProviderRejected(code)

    # -- provider token --------------------------------------------------------------------------

    def _provider_token(self) -> str:
        now = self._clock()
        token = self._token
        if token is None or not 0 <= now - token.issued_at < self._token_ttl:
            value = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                # Apple's documented header is exactly {alg, kid}; PyJWT drops "typ" when it is None.
                headers={"kid": self._key_id, "typ": None},
            )
            token = _ProviderToken(value, now)
            self._token = token
        return token.value

    def _forget_token(self, value: str) -> None:
        # Only drop the token APNs refused, so concurrent rejections cause one regeneration.
        if self._token is not None and self._token.value == value:
            self._token = None
