"""Which provider delivers a push, and which gateway a Kakao or text message: built per environment
from its settings, sharing HTTP clients.

Clients are injected into providers, so one aiohttp session (FCM, webhook) and one
HTTP/2 client per CA bundle (APNs) serve every environment of the process.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import aiohttp
import httpx
import msgspec

from magpie.providers.apns import ApnsProvider
from magpie.providers.base import PhoneGateway, Provider, ProviderRejected
from magpie.providers.fcm import FcmProvider
from magpie.providers.http import ImageFetcher, Network
from magpie.providers.nhn import NhnGateway
from magpie.providers.sandbox import Record, RecordPhone, SandboxGateway, SandboxProvider
from magpie.providers.solapi import SolapiGateway
from magpie.providers.webhook import WebhookProvider

B = TypeVar("B")


class NotConfigured(ProviderRejected):
    """The campaign asks for a provider the environment has no settings for."""


class _Built(Generic[B]):
    """Providers or gateways built from an environment's settings, per (env_id, name), rebuilt when
    the settings that built one change (a digest of them).

    The settings object asked with is remembered too: one work item's recipients all ask with their
    snapshot's settings, and the same object needs no digest.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[str, B, Mapping[str, Any]]] = {}

    def get(self, key: tuple[int, str], settings: Mapping[str, Any], config: object, build: Callable[[], B]) -> B:
        entry = self._entries.get(key)
        if entry is not None and entry[2] is settings:
            return entry[1]
        digest = hashlib.sha256(msgspec.json.encode(config)).hexdigest()
        built = entry[1] if entry is not None and entry[0] == digest else build()
        self._entries[key] = (digest, built, settings)
        return built

    def clear(self) -> list[B]:
        """Forget everything built; returns it, for closing."""
        built = [entry[1] for entry in self._entries.values()]
        self._entries.clear()
        return built


class ProviderRegistry:
    """Providers per environment, rebuilt when the environment's provider settings change."""

    def __init__(
        self,
        *,
        record_sandbox: Record,
        record_phone: RecordPhone | None = None,
        timeout: float = 10.0,
        concurrency: int = 64,
        clock: Callable[[], float] | None = None,
        fetch_allow: Iterable[Network] = (),
    ) -> None:
        self._record = record_sandbox
        self._images = ImageFetcher(allow=fetch_allow)
        self._timeout = timeout
        self._concurrency = concurrency
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._http2: dict[str, httpx.AsyncClient] = {}
        self._providers: _Built[Provider] = _Built()
        self._gateways: _Built[PhoneGateway] = _Built()
        self._record_phone = record_phone
        self.sandbox = SandboxProvider(record=record_sandbox)

    def _aiohttp(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._concurrency * 2, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _h2(self, ca_file: str | None) -> httpx.AsyncClient:
        key = ca_file or ""
        client = self._http2.get(key)
        if client is None:
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
            client = httpx.AsyncClient(
                http2=True,
                verify=verify,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            )
            self._http2[key] = client
        return client

    def _build(self, name: str, config: Mapping[str, Any]) -> Provider:
        clock_kw: dict[str, Any] = {"clock": self._clock} if self._clock is not None else {}
        if name == "fcm":
            kw: dict[str, Any] = {"base_url": config["baseUrl"]} if config.get("baseUrl") else {}
            return FcmProvider(
                project_id=config["projectId"],
                service_account=config["serviceAccount"],
                session=self._aiohttp(),
                timeout=self._timeout,
                **kw,
                **clock_kw,
            )
        if name == "apns":
            kw = {"base_url": config["baseUrl"]} if config.get("baseUrl") else {}
            return ApnsProvider(
                team_id=config["teamId"],
                key_id=config["keyId"],
                private_key=config["privateKey"],
                topic=config["topic"],
                client=self._h2(config.get("caFile")),
                **kw,
                **clock_kw,
            )
        return WebhookProvider(
            url=config["url"],
            secret=config["secret"],
            session=self._aiohttp(),
            timeout=self._timeout,
            **clock_kw,
        )

    def provider(self, *, env_id: int, settings: Mapping[str, Any], name: str) -> Provider:
        """The provider ``name`` (fcm, apns, webhook) of an environment, or ``NotConfigured``."""
        config = settings.get("providers", {}).get(name)
        if config is None:
            raise NotConfigured("PROVIDER_NOT_CONFIGURED", f"the environment has no {name} settings")
        return self._providers.get((env_id, name), settings, config, lambda: self._build(name, config))

    def for_token(
        self, *, env_id: int, settings: Mapping[str, Any], campaign_provider: str, token_type: str
    ) -> Provider:
        if campaign_provider == "sandbox":
            return self.sandbox
        if campaign_provider == "webhook":
            return self.provider(env_id=env_id, settings=settings, name="webhook")
        return self.provider(env_id=env_id, settings=settings, name="fcm" if token_type == "FCM" else "apns")

    def gateway(
        self, *, env_id: int, settings: Mapping[str, Any], channel: str, campaign_provider: str = "gateway"
    ) -> PhoneGateway:
        """The gateway sending ``channel`` (kakao or sms) for an environment: its settings say which."""
        name = "sandbox" if campaign_provider == "sandbox" else str(settings.get(f"{channel}Gateway") or "sandbox")
        if name == "sandbox":
            if self._record_phone is None:
                raise NotConfigured("PROVIDER_NOT_CONFIGURED", "this process has no sandbox inbox for messages")
            config: Mapping[str, Any] = {}
        else:
            config = settings.get("providers", {}).get(name)
            if config is None:
                raise NotConfigured("PROVIDER_NOT_CONFIGURED", f"the environment has no {name} settings")
        sender = str(settings.get("smsSender") or "")
        return self._gateways.get(
            (env_id, name), settings, [name, config, sender], lambda: self._build_gateway(env_id, name, config, sender)
        )

    def _build_gateway(self, env_id: int, name: str, config: Mapping[str, Any], sender: str) -> PhoneGateway:
        gateway: PhoneGateway
        if name == "sandbox":
            assert self._record_phone is not None
            gateway = SandboxGateway(env_id=env_id, record=self._record_phone)
        elif name == "nhn":
            gateway = NhnGateway(
                config=config, sender_number=sender, session=self._aiohttp(), images=self._images, timeout=self._timeout
            )
        else:
            clock_kw: dict[str, Any] = {"clock": self._clock} if self._clock is not None else {}
            gateway = SolapiGateway(
                config=config,
                sender_number=sender,
                session=self._aiohttp(),
                images=self._images,
                timeout=self._timeout,
                **clock_kw,
            )
        return gateway

    async def aclose(self) -> None:
        for provider in self._providers.clear():
            await provider.aclose()
        for gateway in self._gateways.clear():
            await gateway.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._images.aclose()
        for client in self._http2.values():
            await client.aclose()
        self._http2.clear()
