"""Push campaigns: the declarative definition, its validation, and Liquid rendering. No I/O.

A campaign file (YAML or JSON) looks like::

    key: 1
    name: Order shipped
    status: ACTIVE
    purpose: INFORMATION
    message:
      title: "{{ user_properties.name | default: '고객' }}님, 주문하신 상품이 출발했어요"
      body: "주문번호 {{ api_properties.orderNo }}"
      clickAction: DEEP_LINK
      link: "myapp://orders/{{ api_properties.orderNo }}"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

from magpie.domain.audience import Audience, audience_to_json, parse_audience
from magpie.errors import InvalidCampaign

STATUSES: Final = ("DRAFT", "ACTIVE", "PAUSED", "ARCHIVED")
PURPOSES: Final = ("MARKETING", "INFORMATION")
CLICK_ACTIONS: Final = ("APP_OPEN", "DEEP_LINK")
CONSENT_RULES: Final = ("SUBSCRIBED_ONLY", "SUBSCRIBED_OR_UNKNOWN")
PROVIDERS: Final = ("sandbox", "push", "webhook")
_FIELDS: Final = {
    "key",
    "name",
    "status",
    "deliveryType",
    "purpose",
    "provider",
    "consentRule",
    "tags",
    "message",
    "audience",
    "description",
}
_MESSAGE_FIELDS: Final = {"title", "body", "imageUrl", "clickAction", "link"}

_liquid = Environment()


def _sample_context() -> dict[str, Any]:
    return {"api_properties": {}, "user_properties": {}, "user": {"id": "", "deviceId": ""}}


def compile_template(source: str, *, field_name: str) -> BoundTemplate:
    """Parse a Liquid template and render it once on empty data, so errors surface at apply time."""
    try:
        template = _liquid.from_string(source)
        template.render(**_sample_context())
    except LiquidError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidCampaign(f"message.{field_name}: template error: {first}") from exc
    return template


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    image_url: str | None
    click_action: str
    link: str | None


@dataclass(frozen=True)
class Campaign:
    key: int
    name: str
    status: str
    purpose: str
    provider: str
    consent_rule: str
    tags: tuple[str, ...]
    message: Message
    audience: Audience
    description: str = ""
    _templates: dict[str, BoundTemplate] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_marketing(self) -> bool:
        return self.purpose == "MARKETING"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "deliveryType": "API",
            "purpose": self.purpose,
            "provider": self.provider,
            "consentRule": self.consent_rule,
            "tags": list(self.tags),
            "description": self.description,
            "message": {
                "title": self.message.title,
                "body": self.message.body,
                "imageUrl": self.message.image_url,
                "clickAction": self.message.click_action,
                "link": self.message.link,
            },
            "audience": audience_to_json(self.audience),
        }

    def render(self, context: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """Title, body and link for one recipient. Raises ``LiquidError`` on a runtime error."""
        title = self._templates["title"].render(**context)
        body = self._templates["body"].render(**context)
        link = self._templates["link"].render(**context) if "link" in self._templates else None
        return title, body, link


def _choice(raw: Mapping[str, Any], name: str, options: tuple[str, ...], default: str | None) -> str:
    value = raw.get(name, default)
    if value not in options:
        raise InvalidCampaign(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def parse_campaign(raw: object) -> Campaign:
    """Validate a campaign definition; every problem is an ``InvalidCampaign`` naming the field."""
    if not isinstance(raw, Mapping):
        raise InvalidCampaign("a campaign must be an object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise InvalidCampaign(f"unknown campaign fields: {', '.join(sorted(unknown))}")
    key = raw.get("key")
    if not isinstance(key, int) or isinstance(key, bool) or not 1 <= key <= 2**31 - 1:
        raise InvalidCampaign("key must be a positive integer")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidCampaign("name must be a non-empty string of at most 256 characters")
    if raw.get("deliveryType", "API") != "API":
        raise InvalidCampaign("deliveryType must be API: magpie campaigns are triggered through the API")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise InvalidCampaign("tags must be a list of non-empty strings")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise InvalidCampaign("description must be a string")
    message_raw = raw.get("message")
    if not isinstance(message_raw, Mapping):
        raise InvalidCampaign("message is required: {title, body, clickAction, link?, imageUrl?}")
    unknown = set(message_raw) - _MESSAGE_FIELDS
    if unknown:
        raise InvalidCampaign(f"unknown message fields: {', '.join(sorted(unknown))}")
    templates: dict[str, BoundTemplate] = {}
    for part in ("title", "body"):
        text = message_raw.get(part)
        if not isinstance(text, str) or not text.strip():
            raise InvalidCampaign(f"message.{part} must be a non-empty string")
        templates[part] = compile_template(text, field_name=part)
    click = _choice(message_raw, "clickAction", CLICK_ACTIONS, "APP_OPEN")
    link = message_raw.get("link")
    if link is not None and not isinstance(link, str):
        raise InvalidCampaign("message.link must be a string")
    if click == "DEEP_LINK" and not link:
        raise InvalidCampaign("message.link is required when clickAction is DEEP_LINK")
    if link:
        templates["link"] = compile_template(link, field_name="link")
    image = message_raw.get("imageUrl")
    if image is not None and (not isinstance(image, str) or not image.startswith(("http://", "https://"))):
        raise InvalidCampaign("message.imageUrl must be an http(s) URL")
    return Campaign(
        key=key,
        name=name.strip(),
        status=_choice(raw, "status", STATUSES, "DRAFT"),
        purpose=_choice(raw, "purpose", PURPOSES, None),
        provider=_choice(raw, "provider", PROVIDERS, "push"),
        consent_rule=_choice(raw, "consentRule", CONSENT_RULES, "SUBSCRIBED_ONLY"),
        tags=tuple(tags),
        message=Message(
            title=message_raw["title"],
            body=message_raw["body"],
            image_url=image,
            click_action=click,
            link=link or None,
        ),
        audience=parse_audience(raw.get("audience")),
        description=description,
        _templates=templates,
    )


DEMO_CAMPAIGN: Final[dict[str, Any]] = {
    "key": 1,
    "name": "Demo: product restocked",
    "status": "ACTIVE",
    "deliveryType": "API",
    "purpose": "INFORMATION",
    "provider": "sandbox",
    "consentRule": "SUBSCRIBED_OR_UNKNOWN",
    "tags": ["demo"],
    "description": "Created by `magpie serve` on a new store; pushes land in the sandbox inbox.",
    "message": {
        "title": "{{ user_properties.name | default: '고객' }}님, 기다리던 상품이 입고됐어요",
        "body": "상품 {{ api_properties.productNumber | default: '' }} 지금 확인해 보세요.",
        "clickAction": "DEEP_LINK",
        "link": "magpie-demo://products/{{ api_properties.productNumber }}",
    },
}


def delivery_warnings(*, provider: str, configured: Iterable[str], environment: str) -> list[str]:
    """Why pushes of a campaign on ``provider`` would fail in an environment with ``configured`` providers.

    >>> delivery_warnings(provider="push", configured=["apns"], environment="prod")[0][:36]
    'environment prod has no fcm settings'
    """
    have = set(configured)
    if provider == "webhook" and "webhook" not in have:
        return [
            f"environment {environment} has no webhook settings: every recipient would end FAILED "
            "PROVIDER_NOT_CONFIGURED (magpie settings -f FILE --env ENV; docs/operations.md#providers)"
        ]
    if provider == "push":
        missing = [name for name in ("fcm", "apns") if name not in have]
        if len(missing) == 2:
            return [
                f"environment {environment} has no fcm or apns settings: every recipient would end FAILED "
                "PROVIDER_NOT_CONFIGURED (magpie settings -f FILE --env ENV; docs/operations.md#providers)"
            ]
        return [
            f"environment {environment} has no {name} settings: {kind} tokens would end FAILED PROVIDER_NOT_CONFIGURED"
            for name, kind in (("fcm", "Android (FCM)"), ("apns", "iOS (APN)"))
            if name in missing
        ]
    return []
