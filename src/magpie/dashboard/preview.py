"""A campaign's message as a recipient's phone shows it, through the renderers the sender uses.

Push goes through ``domain.delivery.render`` (the ``(광고)`` title and opt-out text), Kakao and SMS
through ``domain.campaigns.render_phone`` (AlimTalk variables and buttons, the marketing SMS head and
080 line, the SMS/LMS/MMS type and EUC-KR size). The data is a sample made from the properties the
campaign's own templates read, or a real user's properties when one is chosen. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from liquid.exceptions import LiquidError

from magpie.domain import delivery
from magpie.domain.campaigns import Campaign, Message, MessageTooLarge, render_phone
from magpie.domain.messages import KakaoMessage, SmsMessage, euckr_size

SAMPLE_USER_ID = "user-1024"
SAMPLE_DEVICE_ID = "device-1024"
# ``api_properties.name``, ``user_properties["name"]`` or ``user_properties['name']`` in a Liquid template.
_REFERENCE = re.compile(
    r"\b(api_properties|user_properties)\s*(?:\.\s*([A-Za-z_][\w-]*)|\[\s*[\"']([^\"']+)[\"']\s*\])"
)
_SMS_KINDS = ("SMS", "LMS", "MMS")
# What a Kakao button opens, in the order a phone would try: the mobile web link first.
_LINKS = ("linkMo", "linkPc", "schemeAndroid", "schemeIos")


def sources(campaign: Campaign) -> list[str]:
    """Every Liquid template of the campaign's message."""
    message = campaign.message
    if isinstance(message, Message):
        return [message.title, message.body, message.link or ""]
    parts: list[str] = []
    sms: SmsMessage | None = None
    if isinstance(message, KakaoMessage):
        parts += [source for _, source in message.variables] if campaign.kind == "alimtalk" else [message.text]
        sms = message.fallback
    else:
        sms = message
    if sms is not None:
        parts += [sms.text, sms.title or ""]
    return parts


def referenced(campaign: Campaign) -> dict[str, list[str]]:
    """The ``api_properties`` and ``user_properties`` names the templates read, each once, in order."""
    found: dict[str, list[str]] = {"api_properties": [], "user_properties": []}
    for source in sources(campaign):
        for match in _REFERENCE.finditer(source):
            name = match.group(2) or match.group(3)
            if name not in found[match.group(1)]:
                found[match.group(1)].append(name)
    return found


def sample_data(campaign: Campaign) -> dict[str, dict[str, Any]]:
    """Sample properties for every name the templates read: the name itself, in brackets."""
    names = referenced(campaign)
    return {kind: {name: f"[{name}]" for name in names[kind]} for kind in names}


def render(
    campaign: Campaign,
    settings: Mapping[str, Any],
    *,
    user_properties: Mapping[str, Any] | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """What the preview shows: the rendered message (or why it fails) and the data it was rendered with.

    ``user_properties`` and ``user_id`` are a real user's; without them, sample properties stand in.
    The ``api_properties`` a trigger would carry are always samples.
    """
    sample = sample_data(campaign)
    api_properties = sample["api_properties"]
    properties = sample["user_properties"] if user_properties is None else dict(user_properties)
    who = user_id or SAMPLE_USER_ID
    data = {"api_properties": api_properties, "user_properties": properties, "user": {"id": who}}
    shown: dict[str, Any] = {"channel": campaign.channel, "data": data, "real_user": user_id is not None}
    try:
        if isinstance(campaign.message, Message):
            message = delivery.render(
                campaign=campaign,
                api_properties=api_properties,
                user_properties=properties,
                user_id=who,
                device_id=SAMPLE_DEVICE_ID,
                settings=settings,
            )
            shown.update(
                kind="push",
                title=message.title,
                body=message.body,
                link=message.link,
                image_urls=[campaign.message.image_url] if campaign.message.image_url else [],
            )
            return shown
        context = {"api_properties": api_properties, "user_properties": properties, "user": {"id": who, "deviceId": ""}}
        rendering = render_phone(campaign, context, settings)
    except LiquidError as exc:  # a template that fails on this data: say why instead of failing the page
        shown["error"] = "the template fails on this data: " + (str(exc).splitlines()[0] if str(exc) else "error")
        return shown
    except MessageTooLarge as exc:
        shown["error"] = f"with this data the message is {exc.size:,} bytes, more than a text message can carry"
        return shown
    except KeyError as exc:
        shown["error"] = f"the data leaves the placeholder #{{{exc.args[0]}}} unfilled"
        return shown
    shown.update(
        kind=rendering.kind,
        text=rendering.text,
        title=rendering.title,
        # Carriers count bytes of text messages only; Kakao counts characters.
        bytes=rendering.size_bytes if rendering.kind in _SMS_KINDS else None,
        template_code=rendering.template_code,
        buttons=[
            {"name": b.get("name", ""), "link": next((b[k] for k in _LINKS if b.get(k)), None)}
            for b in rendering.buttons
        ],
        image_urls=list(rendering.image_urls),
        marketing=campaign.is_marketing,
        fallback=(
            None
            if rendering.fallback is None
            else {
                "kind": rendering.fallback[0],
                "text": rendering.fallback[1],
                "title": rendering.fallback[2],
                "bytes": euckr_size(rendering.fallback[1]),
            }
        ),
    )
    return shown
