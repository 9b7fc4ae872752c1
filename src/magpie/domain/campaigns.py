"""Campaigns: the declarative definition, its validation, and Liquid rendering. No I/O.

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

Kakao and SMS campaigns say ``channel: kakao`` (with ``type: alimtalk`` or ``type: brand``) or
``channel: sms``; their messages are described in ``magpie.domain.messages``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from io import StringIO
from typing import Any, Final, Protocol, TextIO

import msgspec
from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import LiquidError, LoopIterationLimitError, OutputStreamLimitError

from magpie.domain import experiments, messages
from magpie.domain.audience import Audience, audience_to_json, parse_audience
from magpie.domain.messages import KakaoMessage, MessageError, SmsMessage
from magpie.domain.schedules import Schedule, parse_schedule
from magpie.errors import InvalidCampaign

STATUSES: Final = ("DRAFT", "ACTIVE", "PAUSED", "ARCHIVED")
PURPOSES: Final = ("MARKETING", "INFORMATION")
CLICK_ACTIONS: Final = ("APP_OPEN", "DEEP_LINK")
CONSENT_RULES: Final = ("SUBSCRIBED_ONLY", "SUBSCRIBED_OR_UNKNOWN")
PROVIDERS: Final = ("sandbox", "push", "webhook")
# Kakao and SMS go through the gateway the environment's settings name, or the sandbox.
PHONE_PROVIDERS: Final = ("gateway", "sandbox")
NIGHT_POLICIES: Final = ("HOLD", "DROP")
_FIELDS: Final = {
    "channel",
    "type",
    "nightPolicy",
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
    "schedule",
    *experiments.FIELDS,
}
_MESSAGE_FIELDS: Final = {"title", "body", "imageUrl", "clickAction", "link"}

# Bounds on one rendering of one template part (a title, a body, an AlimTalk variable...): every
# recipient's data goes through the template, so what it may cost is capped. A rendering past a bound
# fails that recipient with RENDER_ERROR; a template past one on no data is refused when applied.
RENDER_LOOP_LIMIT: Final = 2_000
RENDER_OUTPUT_LIMIT: Final = 16 * 1024  # characters
RENDER_NAMESPACE_LIMIT: Final = 64 * 1024


class _CountingContext(RenderContext):
    """Counts every loop iteration of a rendering: Liquid's own limit bounds nested loops, not a series."""

    __slots__ = ("iterations",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iterations = 0

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        self.iterations += length
        if self.iterations > RENDER_LOOP_LIMIT:
            raise LoopIterationLimitError("loop iteration limit reached", token=None)

    def get_buffer(self, buf: TextIO | None = None) -> StringIO:
        carry = buf.size if isinstance(buf, _Output) else 0
        return _Output(limit=RENDER_OUTPUT_LIMIT - carry)


class _Output(StringIO):
    """A bounded rendering output, counted in characters and keeping what is written as it is (Liquid's
    own bounded output turns a CR into LF and cannot count a lone surrogate)."""

    def __init__(self, limit: int) -> None:
        super().__init__(newline="\n")
        self.limit = limit
        self.size = 0

    def write(self, s: str, /) -> int:
        self.size += len(s)
        if self.size > self.limit:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        return super().write(s)


class _BoundedTemplate(BoundTemplate):
    context_class = _CountingContext

    def _get_buffer(self) -> StringIO:
        return _Output(limit=RENDER_OUTPUT_LIMIT)


def _bounded_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` refusing a range longer than the loop bound: ``(1..n) | join`` iterates like a loop."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, range) and len(a) > RENDER_LOOP_LIMIT for a in (*args, *kwargs.values())):
            raise LoopIterationLimitError("loop iteration limit reached", token=None)
        return func(*args, **kwargs)

    return bounded


class _BoundedLiquid(Environment):
    loop_iteration_limit = RENDER_LOOP_LIMIT
    output_stream_limit = RENDER_OUTPUT_LIMIT
    local_namespace_limit = RENDER_NAMESPACE_LIMIT
    template_class = _BoundedTemplate

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters = {name: _bounded_filter(func) for name, func in self.filters.items()}


_liquid = _BoundedLiquid()


class RenderFailed(LiquidError):
    """A template failed on one recipient's data. Its text names the kind of failure only, never the data."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__, token=None)
        self.kind = type(cause).__name__


def _sample_context() -> dict[str, Any]:
    return {"api_properties": {}, "user_properties": {}, "user": {"id": "", "deviceId": ""}}


class Template(Protocol):
    def render(self, *args: Any, **kwargs: Any) -> str: ...


class _Text:
    """A template with no Liquid markup: Liquid would give back its source unchanged."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def render(self, *args: Any, **kwargs: Any) -> str:  # noqa: ARG002 - the same call as Liquid's
        return self.source


# ``{{ a.b.c }}``: the shape of most per-recipient values (an AlimTalk variable, a name in a text).
_LOOKUP = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")


class _Interpolation:
    """Text and ``{{ a.b.c }}`` lookups only: a string or integer found at each path is written as Liquid
    writes it; anything else (missing, a float, a list...), or an output past Liquid's bound, is rendered
    by Liquid itself."""

    __slots__ = ("liquid", "parts")

    def __init__(self, parts: list[str | list[str]], liquid: BoundTemplate) -> None:
        self.parts = parts
        self.liquid = liquid

    def render(self, *args: Any, **kwargs: Any) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = kwargs
            for name in part:
                # A dict (the usual context) is told apart without the ABC's slower check.
                if not (type(value) is dict or isinstance(value, Mapping)) or name not in value:
                    return self.liquid.render(*args, **kwargs)
                value = value[name]
            if isinstance(value, str):
                out.append(value)
            elif type(value) is int:
                out.append(str(value))
            else:
                return self.liquid.render(*args, **kwargs)
        text = "".join(out)
        return text if len(text) <= RENDER_OUTPUT_LIMIT else self.liquid.render(*args, **kwargs)


def _interpolation(source: str) -> list[str | list[str]] | None:
    """``source`` as text and lookups, or None when it holds any other markup."""
    parts: list[str | list[str]] = []
    at = 0
    for found in _LOOKUP.finditer(source):
        parts.append(source[at : found.start()])
        parts.append(found.group(1).split("."))
        at = found.end()
    parts.append(source[at:])
    if any(isinstance(p, str) and ("{{" in p or "{%" in p) for p in parts):
        return None
    return [p for p in parts if p != ""]


# ``{{ x | default: }}``: Liquid drops a filter's ':' with nothing after it, so a forgotten argument
# would render silently; it is refused at apply time instead.
_TAGS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_BARE_FILTER = re.compile(r"\|\s*([A-Za-z_][\w-]*)\s*:\s*(?=,|\||-?\}\}|-?%\})")


def compile_template(source: str, *, field_name: str) -> Template:
    """Parse a Liquid template and render it once on empty data, so errors surface at apply time.

    What every recipient's rendering would do the same way is settled here: text without markup
    is returned as it is, and text with only ``{{ path }}`` lookups reads the values at those paths.
    """
    bare = next((m for tag in _TAGS.findall(source) if (m := _BARE_FILTER.search(tag))), None)
    if bare is not None:
        raise InvalidCampaign(
            f"message.{field_name}: template error: the filter '{bare.group(1)}' has ':' but no argument"
        )
    try:
        template = _liquid.from_string(source)
        template.render(**_sample_context())
    except LiquidError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidCampaign(f"message.{field_name}: template error: {first}") from exc
    if "{{" not in source and "{%" not in source:
        return _Text(source)
    parts = _interpolation(source)
    if parts is not None:
        return _Interpolation(parts, template)
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
    message: Message | KakaoMessage | SmsMessage
    audience: Audience
    description: str = ""
    channel: str = "push"
    # alimtalk | brand for Kakao; None otherwise.
    kind: str | None = None
    # HOLD or DROP at night; None follows the environment's setting.
    night_policy: str | None = None
    # A broadcast's schedule (magpie.domain.schedules); None: sent by triggers only.
    schedule: Schedule | None = None
    # A goal, control group or variants (docs/experiments.md); each variant as a campaign of its own message.
    experiment: experiments.Experiment | None = None
    variants: tuple[Campaign, ...] = ()
    _templates: dict[str, Template] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_marketing(self) -> bool:
        return self.purpose == "MARKETING"

    @property
    def push_message(self) -> Message:
        assert isinstance(self.message, Message), "not a push campaign"
        return self.message

    def assign(self, *, user_key: str) -> experiments.Assignment | None:
        """The recipient's arm of this campaign's experiment; None when it has none."""
        if self.experiment is None:
            return None
        return experiments.assign(experiment=self.experiment, user_key=user_key)

    def for_arm(self, assignment: experiments.Assignment | None) -> Campaign:
        """The campaign whose message ``assignment`` sends: a variant's, or this one's."""
        if isinstance(assignment, experiments.Variant) and assignment.index < len(self.variants):
            return self.variants[assignment.index]
        return self

    def to_json(self) -> dict[str, Any]:
        doc = self._definition()
        if self.schedule is not None:
            doc["schedule"] = self.schedule.to_json()
        if self.experiment is not None:
            doc.update(self.experiment.to_json())
        return doc

    def _definition(self) -> dict[str, Any]:
        if self.channel != "push":
            assert not isinstance(self.message, Message)
            doc: dict[str, Any] = {
                "key": self.key,
                "name": self.name,
                "status": self.status,
                "deliveryType": "API",
                "channel": self.channel,
                "purpose": self.purpose,
                "provider": self.provider,
                "consentRule": self.consent_rule,
                "tags": list(self.tags),
                "description": self.description,
                "message": self.message.to_json(),
                "audience": audience_to_json(self.audience),
            }
            if self.kind is not None:
                doc["type"] = self.kind
            if self.night_policy is not None:
                doc["nightPolicy"] = self.night_policy
            return doc
        message = self.push_message
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
                "title": message.title,
                "body": message.body,
                "imageUrl": message.image_url,
                "clickAction": message.click_action,
                "link": message.link,
            },
            "audience": audience_to_json(self.audience),
        }

    def render(self, context: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """Title, body and link for one recipient. Raises ``RenderFailed`` (a ``LiquidError``)."""
        title = self.render_part("title", context)
        body = self.render_part("body", context)
        link = self.render_part("link", context) if "link" in self._templates else None
        return title, body, link

    def render_part(self, name: str, context: Mapping[str, Any]) -> str:
        """One compiled Liquid part (``title``, ``text``, ``var:<name>``...) for one recipient.

        Whatever goes wrong in the template on this recipient's data (an error, a bound reached) is a
        ``RenderFailed`` for this recipient alone. The output is data: nothing re-reads it as markup.
        """
        try:
            return self._templates[name].render(**context)
        except (LiquidError, ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            raise RenderFailed(exc) from None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a campaign definition, at ``path`` in the document.

    ``path`` names the field (``("message", "buttons", 0, "type")``); ``on_key`` says the field's
    name itself is the problem (an unknown field), not its value.
    """

    path: messages.FieldPath
    message: str
    on_key: bool = False


class CampaignProblems(InvalidCampaign):
    """Several problems of one campaign definition; the error's message is the first of them."""

    def __init__(self, problems: list[Problem]) -> None:
        first, *_ = problems
        super().__init__(first.message)
        self.problems = problems


def _choice(raw: Mapping[str, Any], name: str, options: tuple[str, ...], default: str | None) -> str:
    value = raw.get(name, default)
    if value not in options:
        raise InvalidCampaign(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def parse_campaign(raw: object) -> Campaign:
    """Validate a campaign definition; every problem is an ``InvalidCampaign`` naming the field."""
    campaign = _parse_definition(raw)
    if isinstance(raw, Mapping) and raw.get("schedule") is not None:
        return dataclasses.replace(campaign, schedule=parse_schedule(raw["schedule"]))
    return campaign


def _parse_definition(raw: object) -> Campaign:
    if not isinstance(raw, Mapping):
        raise InvalidCampaign("a campaign must be an object")
    if experiments.FIELDS & set(raw):
        return _parse_experiment_campaign(raw)
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
    channel = _choice(raw, "channel", messages.CHANNELS, "push")
    if channel != "push":
        return _parse_phone_campaign(
            raw, channel=channel, key=key, name=name.strip(), tags=tags, description=description
        )
    for only in ("type", "nightPolicy"):
        if only in raw:
            raise InvalidCampaign(f"{only} applies to kakao and sms campaigns only")
    message_raw = raw.get("message")
    if not isinstance(message_raw, Mapping):
        raise InvalidCampaign("message is required: {title, body, clickAction, link?, imageUrl?}")
    unknown = set(message_raw) - _MESSAGE_FIELDS
    if unknown:
        raise InvalidCampaign(f"unknown message fields: {', '.join(sorted(unknown))}")
    templates: dict[str, Template] = {}
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


def _parse_experiment_campaign(raw: Mapping[str, Any]) -> Campaign:
    """A campaign with a goal, a control group or variants: each variant's message is parsed as the
    campaign's own would be (same channel, same checks); without ``message``, the first variant's is it."""
    base = {k: v for k, v in raw.items() if k not in experiments.FIELDS}
    variant_raws = experiments.variant_messages(raw.get("variants"))
    if variant_raws and "message" not in base:
        base["message"] = variant_raws[0]
    message_of_first_variant = bool(variant_raws) and "message" not in raw
    problems: list[Problem] = []
    try:
        campaign = parse_campaign(base)
    except InvalidCampaign as exc:
        # The first variant's message problems are reported below, under variants[0].
        problems.extend(p for p in _problems_of(exc) if not (message_of_first_variant and p.path[:1] == ("message",)))
    variants: list[Campaign] = []
    for i, message in enumerate(variant_raws):
        try:
            variants.append(parse_campaign({**base, "message": message}))
        except InvalidCampaign as exc:
            for problem in _problems_of(exc):
                if problem.path[:1] != ("message",):
                    continue  # the campaign's own problem, reported once above
                sep = "." if problem.message.startswith("message.") else ": "
                path = ("variants", i, *problem.path)
                problems.append(Problem(path, f"variants[{i}]{sep}{problem.message}", problem.on_key))
    if problems:
        raise CampaignProblems(problems)
    experiment = experiments.parse_experiment(
        raw, key=campaign.key, messages=[v.to_json()["message"] for v in variants]
    )
    return dataclasses.replace(campaign, experiment=experiment, variants=tuple(variants))


def _problems_of(exc: InvalidCampaign) -> list[Problem]:
    """The problems an error carries: each of a ``CampaignProblems``, or the one of a plain error (placed
    under ``message`` when its text names the message)."""
    if isinstance(exc, CampaignProblems):
        return exc.problems
    return [Problem(("message",) if exc.message.startswith("message") else (), exc.message)]


def _parse_phone_campaign(
    raw: Mapping[str, Any], *, channel: str, key: int, name: str, tags: list[str], description: str
) -> Campaign:
    """A Kakao or SMS campaign; ``CampaignProblems`` lists every problem of its type, purpose, night
    policy, message and templates (a bad ``type`` or ``purpose`` value, which says what the rest
    should be, stops at once)."""
    problems: list[Problem] = []
    kind: str | None = None
    if channel == "kakao":
        kind = _choice(raw, "type", messages.KAKAO_KINDS, None)
    elif "type" in raw:
        problems.append(
            Problem(("type",), "type applies to kakao campaigns only: an SMS type follows the size of its text")
        )
    default_purpose = {"alimtalk": "INFORMATION", "brand": "MARKETING"}.get(kind or "")
    purpose = _choice(raw, "purpose", PURPOSES, default_purpose)
    if kind == "alimtalk" and purpose == "MARKETING":
        problems.append(
            Problem(("purpose",), "an AlimTalk is informational only: send marketing through a brand message")
        )
    if kind == "brand" and purpose != "MARKETING":
        problems.append(Problem(("purpose",), "a brand message is marketing: its purpose must be MARKETING"))
    policy = raw.get("nightPolicy")
    if policy is not None and policy not in NIGHT_POLICIES:
        problems.append(Problem(("nightPolicy",), "nightPolicy must be HOLD or DROP"))
    message: KakaoMessage | SmsMessage | None = None
    try:
        if kind is not None:
            message = messages.parse_kakao(raw.get("message"), kind=kind)
        else:
            message = messages.parse_sms(raw.get("message"))
    except MessageError as exc:
        problems.extend(Problem(p.path, p.text, p.on_key) for p in exc.problems)
    templates: dict[str, Template] = {}
    for template_name, path, source in _phone_templates(raw.get("message"), kind=kind):
        try:
            templates[template_name] = compile_template(source, field_name=messages.where(path[1:]))
        except InvalidCampaign as exc:
            problems.append(Problem(path, exc.message))
    if problems:
        raise CampaignProblems(problems)
    assert message is not None
    return Campaign(
        key=key,
        name=name,
        status=_choice(raw, "status", STATUSES, "DRAFT"),
        purpose=purpose,
        provider=_choice(raw, "provider", PHONE_PROVIDERS, "gateway"),
        consent_rule=_choice(raw, "consentRule", CONSENT_RULES, "SUBSCRIBED_ONLY"),
        tags=tuple(tags),
        message=message,
        audience=parse_audience(raw.get("audience")),
        description=description,
        channel=channel,
        kind=kind,
        night_policy=policy,
        _templates=templates,
    )


def _phone_templates(message: object, *, kind: str | None) -> list[tuple[str, messages.FieldPath, str]]:
    """``(name, path, source)`` of each Liquid template of a Kakao (``kind``) or SMS message document.

    Read from the document, so that a template is checked even when another part of the message is
    wrong: an AlimTalk's variables, a brand message's text, an SMS text and title (an AlimTalk's SMS
    fallback's too, its ``#{name}`` placeholders becoming Liquid lookups, so that a recipient's values
    are filled in the same single rendering and never read again).
    """
    if not isinstance(message, Mapping):
        return []
    found: list[tuple[str, messages.FieldPath, str]] = []
    if kind == "brand":
        found += _sources(message, ("text",), at=("message",), prefix="")
    elif kind == "alimtalk":
        variables = message.get("variables")
        pairs = sorted(
            (var, source)
            for var, source in (variables.items() if isinstance(variables, Mapping) else ())
            if isinstance(var, str) and isinstance(source, str)
        )
        found += [(f"var:{var}", ("message", "variables", var), source) for var, source in pairs]
        fallback = message.get("fallback")
        if isinstance(fallback, Mapping):
            names = tuple(var for var, _ in pairs)
            found += [
                (name, path, messages.placeholders_to_liquid(source, names) if names else source)
                for name, path, source in _sources(
                    fallback, ("text", "title"), at=("message", "fallback"), prefix="fallback."
                )
            ]
    else:
        found += _sources(message, ("text", "title"), at=("message",), prefix="")
    return found


def _sources(
    raw: Mapping[str, Any], parts: tuple[str, ...], *, at: messages.FieldPath, prefix: str
) -> list[tuple[str, messages.FieldPath, str]]:
    return [
        (f"{prefix}{part}", (*at, part), source)
        for part in parts
        if isinstance(source := raw.get(part), str) and source.strip()
    ]


def check_for_environment(campaign: Campaign, settings: Mapping[str, Any]) -> None:
    """Apply-time checks that need the environment: the opt-out line and the size it adds.

    Sizes are measured on the text rendered with no data, the least the message can be; a recipient's
    data can only add to it, and a message that then exceeds the limit fails with MESSAGE_TOO_LARGE.
    """
    message = campaign.message
    sms: SmsMessage | None = None
    prefix = ""
    if isinstance(message, SmsMessage):
        sms = message
    elif isinstance(message, KakaoMessage) and message.fallback is not None:
        sms, prefix = message.fallback, "fallback."
    if sms is None:
        return
    text = campaign.render_part(f"{prefix}text", _sample_context())
    title = campaign.render_part(f"{prefix}title", _sample_context()) if sms.title is not None else None
    missing = _missing_opt_out(channel=campaign.channel, purpose=campaign.purpose, settings=settings)
    if missing is not None:
        raise InvalidCampaign(missing)
    if campaign.channel == "sms" and campaign.is_marketing:
        number = str(settings.get("smsOptOutNumber"))
        text = messages.marketing_sms(text, sender=str(settings.get("senderName") or ""), opt_out_number=number)
    try:
        messages.check_sms_size(text=text, title=title, images=len(sms.image_urls), where=f"message.{prefix}text")
    except MessageError as exc:
        raise InvalidCampaign(str(exc)) from exc


def _missing_opt_out(*, channel: object, purpose: object, settings: Mapping[str, Any]) -> str | None:
    """What a marketing SMS lacks in an environment without a free opt-out number; else None."""
    if channel == "sms" and purpose == "MARKETING" and not settings.get("smsOptOutNumber"):
        return "a marketing SMS needs the free opt-out number: set smsOptOutNumber (080-...) in the environment"
    return None


_suggest = messages.nearest


_PROBLEM_PATH = re.compile(r"^([A-Za-z]+(?:\.[A-Za-z:]+)*)\b")


def campaign_problems(raw: object, *, settings: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem of a campaign definition that can be told apart, rather than the first.

    Unknown fields (with the nearest known name), each choice field's value and each push template are
    checked on their own; then the definition, without what was already found wrong, goes through
    ``parse_campaign`` and, with ``settings``, ``check_for_environment``, which add their first problem.
    An empty list means ``parse_campaign`` and ``check_for_environment`` accept it.
    """
    if not isinstance(raw, Mapping):
        return [Problem((), "a campaign must be an object")]
    problems: list[Problem] = []
    cleaned = dict(raw)
    for name in sorted(set(raw) - _FIELDS, key=str):
        problems.append(Problem((str(name),), f"unknown campaign field '{name}'{_suggest(str(name), _FIELDS)}", True))
        del cleaned[name]
    channel = raw.get("channel", "push")
    choices: dict[str, tuple[str, ...]] = {
        "channel": messages.CHANNELS,
        "status": STATUSES,
        "purpose": PURPOSES,
        "consentRule": CONSENT_RULES,
        "provider": PROVIDERS if channel == "push" else PHONE_PROVIDERS,
        "nightPolicy": NIGHT_POLICIES,
    }
    if channel == "kakao":
        choices["type"] = messages.KAKAO_KINDS
    for name, options in choices.items():
        if name in raw and raw[name] not in options:
            value = raw[name]
            hint = _suggest(value, options) if isinstance(value, str) else ""
            if name == "provider" and str(value).lower() in ("fcm", "apns", "apn"):
                hint = " (FCM and APNs are both provider: push, chosen by each device's token)"
            problems.append(Problem((name,), f"{name} must be one of {', '.join(options)}, got {value!r}{hint}"))
            del cleaned[name]
    message = raw.get("message")
    if channel == "push" and isinstance(message, Mapping):
        kept = dict(message)
        for name in sorted(set(message) - _MESSAGE_FIELDS, key=str):
            hint = _suggest(str(name), _MESSAGE_FIELDS)
            problems.append(Problem(("message", str(name)), f"unknown message field '{name}'{hint}", True))
            del kept[name]
        click = message.get("clickAction", "APP_OPEN")
        if click not in CLICK_ACTIONS:
            allowed = ", ".join(CLICK_ACTIONS)
            problems.append(Problem(("message", "clickAction"), f"clickAction must be one of {allowed}, got {click!r}"))
            del kept["clickAction"]
        for part in ("title", "body", "link"):
            text = message.get(part)
            if isinstance(text, str) and text:
                try:
                    compile_template(text, field_name=part)
                except InvalidCampaign as exc:
                    problems.append(Problem(("message", part), exc.message))
                    kept[part] = "-"  # reported: let the rest of the definition be checked
        cleaned["message"] = kept
    found = {p.path for p in problems}
    try:
        campaign = parse_campaign(cleaned)
        if settings is not None:
            check_for_environment(campaign, settings)
    except CampaignProblems as exc:
        problems.extend(p for p in exc.problems if p.path not in found)
        # The environment's own checks need a valid message, but not this one:
        missing = (
            None
            if settings is None
            else _missing_opt_out(channel=channel, purpose=raw.get("purpose"), settings=settings)
        )
        if missing is not None:
            problems.append(Problem((), missing))
    except InvalidCampaign as exc:
        match = _PROBLEM_PATH.match(exc.message)
        path = tuple(match.group(1).split(".")) if match and match.group(1).split(".")[0] in _FIELDS else ()
        if path not in found:
            problems.append(Problem(path, exc.message))
    return problems


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


class PhoneRendering(msgspec.Struct, frozen=True):
    """A Kakao or SMS campaign message rendered for one recipient (the number is added at send time)."""

    kind: str  # alimtalk | brand | SMS | LMS | MMS
    text: str
    title: str | None
    size_bytes: int
    template_code: str | None = None
    template_parameters: tuple[tuple[str, str], ...] = ()
    buttons: tuple[dict[str, str], ...] = ()
    image_urls: tuple[str, ...] = ()
    # (kind, text, title) of the AlimTalk's SMS fallback.
    fallback: tuple[str, str, str | None] | None = None


class MessageTooLarge(Exception):
    """A recipient's data made a text message larger than the gateways take."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def _render_sms(
    campaign: Campaign,
    sms: SmsMessage,
    context: Mapping[str, Any],
    *,
    prefix: str,
    values: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    if values:
        assert isinstance(campaign.message, KakaoMessage)
        names = [name for name, _ in campaign.message.variables]
        context = {**context, messages.PLACEHOLDER_VALUES: messages.placeholder_values(names, values)}
    text = campaign.render_part(f"{prefix}text", context)
    title = campaign.render_part(f"{prefix}title", context) if sms.title is not None else None
    return text, title


def render_phone(campaign: Campaign, context: Mapping[str, Any], settings: Mapping[str, Any]) -> PhoneRendering:
    """Render a Kakao or SMS message for one recipient; a template failing on its data raises ``RenderFailed``.

    A recipient's values are substituted once, into text that is no longer read as markup: an
    AlimTalk's ``#{name}`` placeholders in the registered template, Liquid everywhere else.

    A marketing SMS gets its ``(광고)`` head and free opt-out line here, and its type follows its size.
    """
    message = campaign.message
    if isinstance(message, KakaoMessage):
        if campaign.kind == "brand":
            text = campaign.render_part("text", context)
            return PhoneRendering(
                kind="brand",
                text=text,
                title=None,
                size_bytes=messages.euckr_size(text),
                buttons=tuple(b.to_json() for b in message.buttons),
                image_urls=(message.image_url,) if message.image_url else (),
            )
        values = {name: campaign.render_part(f"var:{name}", context) for name, _ in message.variables}
        text = messages.fill_placeholders(message.text, values)
        fallback = None
        if message.fallback is not None:
            fb_text, fb_title = _render_sms(campaign, message.fallback, context, prefix="fallback.", values=values)
            size = messages.sms_size(fb_text, title=fb_title)
            if not size.fits:
                raise MessageTooLarge(size.bytes)
            fallback = (size.kind, fb_text, fb_title)
        return PhoneRendering(
            kind="alimtalk",
            text=text,
            title=messages.fill_placeholders(message.title, values) if message.title else None,
            size_bytes=messages.euckr_size(text),
            template_code=message.template_code,
            template_parameters=tuple(sorted(values.items())),
            buttons=tuple(b.filled(values).to_json() for b in message.buttons),
            fallback=fallback,
        )
    assert isinstance(message, SmsMessage)
    text, title = _render_sms(campaign, message, context, prefix="")
    if campaign.is_marketing:
        text = messages.marketing_sms(
            text, sender=str(settings.get("senderName") or ""), opt_out_number=str(settings.get("smsOptOutNumber"))
        )
    size = messages.sms_size(text, title=title, images=len(message.image_urls))
    if not size.fits:
        raise MessageTooLarge(size.bytes)
    return PhoneRendering(kind=size.kind, text=text, title=title, size_bytes=size.bytes, image_urls=message.image_urls)


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
