"""A fake FCM HTTP v1 server (OAuth2 token endpoint, ``messages:send``) on 127.0.0.1 for tests and benchmarks.

In tests: ``with FakeFcm() as fcm: ...`` runs it on a background thread with its own event loop.
For benchmarks: ``python -m tests.fakes.fcm --port 0 --quiet`` prints ``READY <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import socket
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Unpack

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .server import HOST, BackgroundLoop, FakeServer, Knobs, bind_loopback, pem, serve_until_signalled

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_DATA_BYTES = 4096

# status -> (google.rpc status, FcmError errorCode, message), as FCM answers them.
_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", None, "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    404: ("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'."),
    500: ("INTERNAL", "INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
}
_MESSAGE_FIELDS = frozenset(
    {
        "name",
        "token",
        "topic",
        "condition",
        "data",
        "notification",
        "android",
        "apns",
        "webpush",
        "fcm_options",
    }
)
_ANDROID_TTL = re.compile(r"\d+(\.\d{1,9})?s")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake answered (``status`` is None when it dropped the connection instead)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int | None


@dataclass(frozen=True)
class RecordedTokenRequest:
    """One OAuth2 token request: the form, the verified assertion's JOSE header and claims (empty when
    verification failed), and the status answered (None when the connection was dropped)."""

    form: dict[str, str]
    header: dict[str, Any]
    claims: dict[str, Any]
    status: int | None


@dataclass
class Scripted:
    """A canned answer for the next ``count`` matching requests (``match``: device token, None for any)."""

    match: str | None
    status: int
    count: int
    retry_after: float | str | None = None
    error_code: str | None = None
    message: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


def error_body(status: int, *, error_code: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A google.rpc error body as FCM sends it; ``error_code`` defaults from the HTTP status."""
    rpc_status, default_code, default_message = _DEFAULT_ERRORS.get(status, ("UNKNOWN", None, "Unknown error."))
    code = error_code if error_code is not None else default_code
    error: dict[str, Any] = {"code": status, "message": message or default_message, "status": rpc_status}
    if code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return {"error": error}


def _retry_after_header(value: float | str | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"Retry-After": value}
    return {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}


def _rsa_key(private_key: rsa.RSAPrivateKey | str | bytes | None) -> rsa.RSAPrivateKey:
    if private_key is None:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key
    data = private_key.encode() if isinstance(private_key, str) else private_key
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("FakeFcm needs an RSA private key")
    return key


class FakeFcm(FakeServer[RecordedRequest, Scripted]):
    """Speaks FCM HTTP v1 and Google's service-account token grant; see the module docstring.

    Knobs (safe to change while running): ``expires_in``, ``unregistered`` (tokens answered 404
    UNREGISTERED), ``invalid_tokens`` (400 "not a valid FCM registration token"), ``fail_503_rate``,
    ``fail_429_rate``, ``drop_rate`` (close the connection without answering), ``delay`` (seconds before
    answering), ``script(...)``, ``revoke_access_tokens()``.
    """

    def __init__(
        self,
        *,
        project_id: str = "magpie-test",
        private_key: rsa.RSAPrivateKey | str | bytes | None = None,
        client_email: str = "firebase-adminsdk@magpie-test.iam.gserviceaccount.com",
        private_key_id: str = "fake-key-1",
        expires_in: int = 3600,
        unregistered: Iterable[str] = (),
        invalid_tokens: Iterable[str] = (),
        **knobs: Unpack[Knobs],
    ) -> None:
        super().__init__(**knobs)
        self.project_id = project_id
        self.client_email = client_email
        self.private_key_id = private_key_id
        self._key = _rsa_key(private_key)
        self._public_key = self._key.public_key()
        self.expires_in = expires_in
        self.unregistered: set[str] = set(unregistered)
        self.invalid_tokens: set[str] = set(invalid_tokens)
        # Message names look like FCM's: projects/<p>/messages/0:<counter>%<per-server nonce>.
        self._ids = itertools.count(1)
        self._name_prefix = f"projects/{project_id}/messages/0:".encode()
        self._name_suffix = f"%{secrets.token_hex(8)}".encode()
        self._token_requests: list[RecordedTokenRequest] = []
        self._token_scripts: deque[Scripted] = deque()
        self._access_tokens: dict[str, float] = {}
        self._counts = {"token_requests": 0, "send_requests": 0, "delivered": 0, "dropped": 0}
        self._sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def start(self) -> FakeFcm:
        self._sock = bind_loopback(self._requested_port)
        self.port = self._sock.getsockname()[1]
        self._background = BackgroundLoop("FakeFcm", self.astart, self.astop)
        try:
            self._background.start()
        except BaseException:
            self._release()
            raise
        return self

    async def astart(self) -> None:
        """Serve on the current loop (``start`` does this on a thread; the CLI on the main loop)."""
        if self._sock is None:
            self._sock = bind_loopback(self._requested_port)
            self.port = self._sock.getsockname()[1]
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/token", self._handle_token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._handle_send)
        app.router.add_get("/__fake/stats", self._handle_stats)
        # No access log: it is the single largest per-request cost at benchmark rates.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # wakes delayed handlers so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- inspection ------------------------------------------------------------------------------

    def service_account(self) -> dict[str, str]:
        """A service-account JSON (as a dict) whose key this fake accepts and whose token_uri is ours."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem(self._key),
            "client_email": self.client_email,
            "client_id": "000000000000000000000",
            "token_uri": self.token_uri,
        }

    @property
    def token_requests(self) -> list[RecordedTokenRequest]:
        with self._lock:
            return list(self._token_requests)

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._access_tokens)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Forget recorded requests and counters (issued access tokens stay valid)."""
        with self._lock:
            self._requests.clear()
            self._token_requests.clear()
            self._delivered.clear()
            for key in self._counts:
                self._counts[key] = 0

    # -- knobs -----------------------------------------------------------------------------------

    def script(
        self,
        token: str | None = None,
        *,
        status: int,
        retry_after: float | str | None = None,
        count: int = 1,
        error_code: str | None = None,
        message: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        drop: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` valid sends to ``token`` (None: to any token) with ``status``.

        The body defaults to FCM's google.rpc error for the status; ``error_code`` overrides its
        FcmError code, ``body`` replaces it entirely (a str/bytes body is sent verbatim).
        """
        entry = Scripted(token, status, count, retry_after, error_code, message, body, dict(headers or {}), drop, delay)
        with self._lock:
            self._scripts.append(entry)

    def script_token_endpoint(
        self,
        *,
        status: int,
        count: int = 1,
        body: Any = None,
        retry_after: float | str | None = None,
        drop: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` valid token requests with ``status`` (and ``body``)."""
        entry = Scripted(None, status, count, retry_after, None, None, body, {}, drop, delay)
        with self._lock:
            self._token_scripts.append(entry)

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued access token: the next send with one answers 401."""
        with self._lock:
            self._access_tokens.clear()

    # -- handlers --------------------------------------------------------------------------------

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        # Abort the TCP connection mid-request: the client sees a reset/disconnect, never a response.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats this as "handler gone"; nothing is written

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        header: dict[str, Any] = {}
        claims: dict[str, Any] = {}
        status = 400
        answer: Any
        if form.get("grant_type") != JWT_BEARER_GRANT:
            answer = {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        else:
            try:
                header, claims = self._verify_assertion(form.get("assertion", ""))
            except jwt.PyJWTError as exc:
                answer = {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
            else:
                if FCM_SCOPE in str(claims.get("scope", "")).split():
                    status, answer = 200, None
                else:
                    answer = {
                        "error": "invalid_scope",
                        "error_description": "Missing firebase.messaging scope.",
                    }
        scripted = self._take_script(self._token_scripts, None) if status == 200 else None
        if scripted is not None:
            await self._sleep(scripted.delay)
            if scripted.drop:
                self._record_token(form, header, claims, None)
                return self._drop(request)
            status = scripted.status
            answer = scripted.body if scripted.body is not None else {"error": "backend_error"}
            self._record_token(form, header, claims, status)
            return _json_response(status, answer, _retry_after_header(scripted.retry_after))
        if status == 200:
            access_token = "ya29.fake-" + secrets.token_urlsafe(24)
            with self._lock:
                self._access_tokens[access_token] = self.clock() + self.expires_in
            answer = {"access_token": access_token, "expires_in": self.expires_in, "token_type": "Bearer"}
        self._record_token(form, header, claims, status)
        return _json_response(status, answer)

    def _verify_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        header = jwt.get_unverified_header(assertion)
        if header.get("kid") != self.private_key_id:
            raise jwt.InvalidTokenError("unknown kid")
        # Time claims are checked against our clock, which tests may drive, not PyJWT's time.time().
        claims: dict[str, Any] = jwt.decode(
            assertion,
            self._public_key,
            algorithms=["RS256"],
            audience=self.token_uri,
            issuer=self.client_email,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iss", "aud", "iat", "exp", "scope"],
            },
        )
        now = self.clock()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise jwt.InvalidTokenError("iat and exp must be numbers")
        if exp <= now or iat > now + 300 or exp - iat > 3600:
            raise jwt.InvalidTokenError("Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
        return header, claims

    def _record_token(
        self, form: dict[str, str], header: dict[str, Any], claims: dict[str, Any], status: int | None
    ) -> None:
        with self._lock:
            self._counts["token_requests"] += 1
            if self.record:
                self._token_requests.append(RecordedTokenRequest(form, header, claims, status))

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if self.delay > 0:
            await self._sleep(self.delay)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        status, answer = self._validate_send(request, doc, len(raw))
        token = _device_token(doc)
        extra_headers: dict[str, str] = {}
        if status == 200 and doc.get("validate_only") is True:
            # FCM checks the request as for a send and delivers nothing.
            self._record(request, doc, 200)
            return _json_response(200, {"name": f"projects/{self.project_id}/messages/validate_only"})
        if status == 200:
            scripted = self._take_script(self._scripts, token)
            if scripted is not None:
                await self._sleep(scripted.delay)
                if scripted.drop:
                    self._record(request, doc, None)
                    return self._drop(request)
                status = scripted.status
                answer = (
                    scripted.body
                    if scripted.body is not None
                    else error_body(status, error_code=scripted.error_code, message=scripted.message)
                )
                extra_headers = {**_retry_after_header(scripted.retry_after), **scripted.headers}
            elif self.drop_rate and self._rng.random() < self.drop_rate:
                self._record(request, doc, None)
                return self._drop(request)
            elif self.fail_503_rate and self._rng.random() < self.fail_503_rate:
                status, answer = 503, error_body(503)
            elif self.fail_429_rate and self._rng.random() < self.fail_429_rate:
                status, answer = 429, error_body(429)
            elif token in self.unregistered:
                status, answer = 404, error_body(404, error_code="UNREGISTERED")
            else:
                # Built by hand: this is the hot path of every benchmark.
                name = b'{"name":"%s%d%s"}' % (self._name_prefix, next(self._ids), self._name_suffix)
                self._record(request, doc, 200, delivered=token)
                return web.Response(body=name, headers=_JSON_HEADERS)
        self._record(request, doc, status, delivered=token if status == 200 else None)
        return _json_response(status, answer, extra_headers)

    def _validate_send(self, request: web.Request, doc: Any, size: int) -> tuple[int, Any]:
        auth = request.headers.get("Authorization", "")
        scheme, _, access_token = auth.partition(" ")
        expires_at = self._access_tokens.get(access_token) if scheme.lower() == "bearer" else None
        if expires_at is None or expires_at <= self.clock():
            return 401, error_body(
                401, message="Request had invalid authentication credentials. Expected OAuth 2 access token."
            )
        if request.match_info["project"] != self.project_id:
            return 403, error_body(
                403, error_code="THIRD_PARTY_AUTH_ERROR", message="Permission denied on this project."
            )
        problem = _message_problem(doc, size)
        if problem is not None:
            return 400, error_body(400, message=problem)
        if doc["message"]["token"] in self.invalid_tokens:
            return 400, error_body(400, message="The registration token is not a valid FCM registration token")
        return 200, None

    def _record(self, request: web.Request, doc: Any, status: int | None, delivered: str | None = None) -> None:
        with self._lock:
            self._counts["send_requests"] += 1
            if status is None:
                self._counts["dropped"] += 1
            if delivered is not None:
                self._counts["delivered"] += 1
            if not self.record:
                return
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._requests.append(RecordedRequest(request.method, request.path, headers, doc, status))
            if delivered is not None:
                self._delivered.append(delivered)


def _device_token(doc: Any) -> str | None:
    try:
        token = doc["message"]["token"]
    except (TypeError, KeyError):
        return None
    return token if isinstance(token, str) else None


def _message_problem(doc: Any, size: int) -> str | None:
    """Why FCM would refuse this send body with INVALID_ARGUMENT, or None."""
    if size > 1 << 16:
        return "Request payload size exceeds the limit."
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), dict):
        return "Invalid JSON payload received. Expected a 'message' object."
    unknown = set(doc) - {"message", "validate_only"}
    if unknown:
        return f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}."
    message = doc["message"]
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        return f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r} at 'message'."
    token = message.get("token")
    if not isinstance(token, str) or not token:
        return "Recipient of the message is not set."
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "Invalid value at 'message.data'."
    data_bytes = 0
    for key, value in data.items():
        if not isinstance(value, str):
            return f"Invalid value at 'message.data[{key}]' (TYPE_STRING)."
        data_bytes += len(key.encode()) + len(value.encode())
    if data_bytes > MAX_DATA_BYTES:
        return "Android message is too big"
    hackle = data.get("hackle")
    if hackle is None:
        return "data.hackle is missing (magpie always sends Hackle's payload)."
    try:
        parsed = json.loads(hackle)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return "data.hackle must be a JSON object."
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "Invalid value at 'message.android'."
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "Invalid value at 'message.android.priority'."
    ttl = android.get("ttl", "0s")
    if not isinstance(ttl, str) or not _ANDROID_TTL.fullmatch(ttl):
        return "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)."
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and not isinstance(collapse_key, str):
        return "Invalid value at 'message.android.collapse_key'."
    return None


_JSON_HEADERS = {"Content-Type": "application/json; charset=UTF-8"}


def _json_response(status: int, answer: Any, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(answer, bytes | str):
        body = answer.encode() if isinstance(answer, str) else answer
        return web.Response(status=status, body=body, headers=headers)
    body = json.dumps(answer, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


# -- command line (benchmarks) -----------------------------------------------------------------------


async def _serve_forever(fake: FakeFcm, service_account_out: str | None) -> None:
    def write_service_account() -> None:
        if service_account_out:
            with open(service_account_out, "w", encoding="utf-8") as fh:
                json.dump(fake.service_account(), fh)

    await serve_until_signalled(fake, ready=write_service_account)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.fcm", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--project-id", default="magpie-test")
    parser.add_argument("--private-key", help="PEM file of the service-account RSA key (default: generated)")
    parser.add_argument("--service-account-out", help="write the matching service-account JSON here")
    parser.add_argument("--expires-in", type=int, default=3600)
    parser.add_argument("--fail-503-rate", type=float, default=0.0)
    parser.add_argument("--fail-429-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="count requests but do not record them")
    args = parser.parse_args(argv)
    private_key = None
    if args.private_key:
        with open(args.private_key, "rb") as fh:
            private_key = fh.read()
    fake = FakeFcm(
        project_id=args.project_id,
        private_key=private_key,
        expires_in=args.expires_in,
        fail_503_rate=args.fail_503_rate,
        fail_429_rate=args.fail_429_rate,
        drop_rate=args.drop_rate,
        delay=args.delay,
        seed=args.seed,
        record=not args.quiet,
        port=args.port,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_forever(fake, args.service_account_out))
    else:
        uvloop.run(_serve_forever(fake, args.service_account_out))
    fake.stop()  # closes the listening socket
    return 0


if __name__ == "__main__":
    sys.exit(main())
