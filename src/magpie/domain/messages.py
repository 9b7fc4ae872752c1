"""Kakao and text messages: AlimTalk templates, SMS sizing, marketing wrapping and channel rules. No I/O.

Three message kinds travel to a phone number instead of a device token::

    kakao / alimtalk   informational only; a template registered with Kakao, #{variable} placeholders
    kakao / brand      marketing; Kakao refuses it at night (20:50-08:00)
    sms                SMS (<= 90 bytes), LMS (<= 2,000 bytes, with a title) or MMS (with images),
                       sized in EUC-KR as the carriers count it

>>> fill_placeholders("#{name}님, 주문 #{order}", {"name": "홍길동", "order": "A-1"})
'홍길동님, 주문 A-1'
>>> sms_size("안녕하세요").kind
'SMS'
>>> marketing_sms("봄 세일", sender="magpie", opt_out_number="080-123-4567")
'(광고)magpie\\n봄 세일\\n무료수신거부 080-123-4567'
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from magpie.domain import compliance

CHANNELS: Final = ("push", "kakao", "sms")
KAKAO_KINDS: Final = ("alimtalk", "brand")
SMS_MAX_BYTES: Final = 90
LMS_MAX_BYTES: Final = 2000
TITLE_MAX_BYTES: Final = 40
MAX_IMAGES: Final = 3
MAX_PLACEHOLDERS: Final = 30
ALIMTALK_MAX_CHARS: Final = 1000
MAX_BUTTONS: Final = 5
OPT_OUT_PREFIX: Final = "무료수신거부"
# Kakao refuses brand messages (and FriendTalk) from 20:50 to 08:00, whatever the user agreed to.
BRAND_NIGHT: Final = ("20:50", "08:00")

_PLACEHOLDER = re.compile(r"#\{([^{}#\s][^{}#]*)\}")
# Liquid markup (a raw block whole): placeholders inside it are left to Liquid.
_MARKUP = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}|\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# The Liquid variable an AlimTalk's SMS fallback reads its placeholders' values from.
PLACEHOLDER_VALUES: Final = "_alimtalk"
_OPT_OUT_NUMBER = re.compile(r"^080-?\d{3,4}-?\d{4}$")

SmsKind = Literal["SMS", "LMS", "MMS"]


def euckr_size(text: str) -> int:
    """Bytes of ``text`` as Korean carriers count them: ASCII 1, every other character 2.

    That is EUC-KR (CP949 for the Hangul syllables EUC-KR lacks); a character neither can encode
    (an emoji) still occupies two bytes on the gateways, which replace it.

    >>> euckr_size("abc 가나")
    8
    """
    # Every character counts 2 but the ASCII ones, which the ASCII encoding keeps (one pass in C).
    return 2 * len(text) - len(text.encode("ascii", "ignore"))


def unencodable(text: str) -> list[str]:
    """Characters a text message cannot carry (outside CP949), each listed once, in order."""
    seen: list[str] = []
    for ch in text:
        if ord(ch) >= 0x80 and ch not in seen:
            try:
                ch.encode("cp949")
            except UnicodeEncodeError:
                seen.append(ch)
    return seen


@dataclass(frozen=True, slots=True)
class SmsSize:
    """The type a text message travels as, and its size in bytes (text only; the title apart)."""

    kind: SmsKind
    bytes: int
    title_bytes: int

    @property
    def fits(self) -> bool:
        return self.bytes <= LMS_MAX_BYTES and self.title_bytes <= TITLE_MAX_BYTES


def sms_size(text: str, *, title: str | None = None, images: int = 0) -> SmsSize:
    """SMS up to 90 bytes without a title or image, LMS up to 2,000 bytes, MMS when images ride along."""
    size = euckr_size(text)
    title_bytes = euckr_size(title) if title else 0
    kind: SmsKind
    if images:
        kind = "MMS"
    elif size <= SMS_MAX_BYTES and not title:
        kind = "SMS"
    else:
        kind = "LMS"
    return SmsSize(kind=kind, bytes=size, title_bytes=title_bytes)


def is_opt_out_number(value: str) -> bool:
    """A free opt-out line is an 080 number.

    >>> is_opt_out_number("080-123-4567"), is_opt_out_number("02-123-4567")
    (True, False)
    """
    return bool(_OPT_OUT_NUMBER.match(value.strip()))


def marketing_sms(text: str, *, sender: str, opt_out_number: str) -> str:
    """Start with exactly ``(광고)`` and the sender's name; end with the free opt-out line.

    Either part already present is not added again, so wrapping twice changes nothing.
    """
    body = text
    if not body.startswith(compliance.AD_PREFIX):
        head = compliance.AD_PREFIX + sender.strip()
        body = f"{head}\n{body}"
    line = f"{OPT_OUT_PREFIX} {opt_out_number.strip()}"
    if line not in body:
        body = f"{body}\n{line}"
    return body


# -- AlimTalk templates ------------------------------------------------------------------------------


def placeholders(text: str) -> list[str]:
    """The ``#{name}`` placeholders of a template, each once, in order of appearance.

    >>> placeholders("#{a} #{b} #{a}")
    ['a', 'b']
    """
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name not in names:
            names.append(name)
    return names


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``#{name}`` by its value; a name without a value raises ``KeyError``."""
    pieces = _pieces(text)
    if len(pieces) == 1:
        return text
    # Literal text at even positions, placeholder names at odd ones (``re.split`` with one group).
    return "".join([piece if i % 2 == 0 else values[piece] for i, piece in enumerate(pieces)])


@functools.lru_cache(maxsize=256)
def _pieces(text: str) -> list[str]:
    """A template split once for every recipient it is filled for (the list is shared: never changed)."""
    return _PLACEHOLDER.split(text)


def placeholders_to_liquid(text: str, names: Sequence[str]) -> str:
    """A Liquid template with each ``#{name}`` of ``names`` outside markup read from ``PLACEHOLDER_VALUES``.

    The values are then output by the same rendering as the rest of the template, as data: a value
    that looks like a placeholder or like Liquid is never read again.

    >>> placeholders_to_liquid("#{a}님 {{ x }} #{b}", ["a", "b"])
    '{{ _alimtalk.v0 }}님 {{ x }} {{ _alimtalk.v1 }}'
    """
    index = {name: i for i, name in enumerate(names)}

    def lookup(match: re.Match[str]) -> str:
        i = index.get(match.group(1))
        return match.group(0) if i is None else f"{{{{ {PLACEHOLDER_VALUES}.v{i} }}}}"

    out: list[str] = []
    end = 0
    for markup in _MARKUP.finditer(text):
        out.append(_PLACEHOLDER.sub(lookup, text[end : markup.start()]))
        out.append(markup.group(0))
        end = markup.end()
    out.append(_PLACEHOLDER.sub(lookup, text[end:]))
    return "".join(out)


def placeholder_values(names: Sequence[str], values: Mapping[str, str]) -> dict[str, str]:
    """The ``PLACEHOLDER_VALUES`` object for a template made by ``placeholders_to_liquid(text, names)``."""
    return {f"v{i}": values[name] for i, name in enumerate(names) if name in values}


def unfillable(template_parts: list[str], declared: set[str]) -> list[str]:
    """Placeholders in any of ``template_parts`` that ``declared`` does not provide, in order."""
    missing: list[str] = []
    for part in template_parts:
        for name in placeholders(part):
            if name not in declared and name not in missing:
                missing.append(name)
    return missing


# -- consent and night ------------------------------------------------------------------------------


def purpose_of(channel: str, kind: str | None, purpose: str) -> str:
    """AlimTalk is informational and brand messages are marketing by definition; SMS says which."""
    if channel == "kakao":
        return compliance.INFORMATION if kind == "alimtalk" else compliance.MARKETING
    return purpose


def consent_allows(*, crm: Mapping[str, object], channel: str, purpose: str, rule: str) -> bool:
    """The consent a message's channel and purpose need.

    Marketing follows the campaign's rule (a brand message always needs SUBSCRIBED);
    information is blocked only by an explicit opt-out.
    """
    if channel == "kakao" and purpose == compliance.MARKETING:
        rule = compliance.SUBSCRIBED_ONLY
    return compliance.consent_allows(crm=crm, purpose=purpose, rule=rule, channel=channel)


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: str
    end: str
    # Whether a recipient's night-time consent lifts the rule (SMS and push do; Kakao never does).
    consent_lifts: bool


def night_rule(*, channel: str, kind: str | None, purpose: str, settings: Mapping[str, object]) -> QuietHours | None:
    """The quiet hours a message obeys, or None when it may be sent at any hour."""
    if channel == "kakao":
        return QuietHours(*BRAND_NIGHT, consent_lifts=False) if kind == "brand" else None
    if purpose != compliance.MARKETING:
        return None
    return QuietHours(str(settings.get("nightStart", "21:00")), str(settings.get("nightEnd", "08:00")), True)


# -- campaign messages ------------------------------------------------------------------------------

BUTTON_TYPES: Final = ("WL", "AL", "DS", "BK", "MD", "AC")
_BUTTON_FIELDS: Final = {"type", "name", "linkMo", "linkPc", "schemeIos", "schemeAndroid"}


@dataclass(frozen=True, slots=True)
class Button:
    """A Kakao message button, in the field names both gateways use."""

    type: str
    name: str
    link_mo: str | None = None
    link_pc: str | None = None
    scheme_ios: str | None = None
    scheme_android: str | None = None

    def to_json(self) -> dict[str, str]:
        doc = {
            "type": self.type,
            "name": self.name,
            "linkMo": self.link_mo,
            "linkPc": self.link_pc,
            "schemeIos": self.scheme_ios,
            "schemeAndroid": self.scheme_android,
        }
        return {k: v for k, v in doc.items() if v is not None}

    def parts(self) -> list[str]:
        return [p for p in (self.name, self.link_mo, self.link_pc, self.scheme_ios, self.scheme_android) if p]

    def filled(self, values: Mapping[str, str]) -> Button:
        def fill(part: str | None) -> str | None:
            return None if part is None else fill_placeholders(part, values)

        return Button(
            type=self.type,
            name=fill_placeholders(self.name, values),
            link_mo=fill(self.link_mo),
            link_pc=fill(self.link_pc),
            scheme_ios=fill(self.scheme_ios),
            scheme_android=fill(self.scheme_android),
        )


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """An SMS/LMS/MMS campaign message, or an AlimTalk's SMS fallback. ``text`` and ``title`` are Liquid."""

    text: str
    title: str | None = None
    image_urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"text": self.text}
        if self.title is not None:
            doc["title"] = self.title
        if self.image_urls:
            doc["imageUrls"] = list(self.image_urls)
        return doc


@dataclass(frozen=True, slots=True)
class KakaoMessage:
    """An AlimTalk (a registered template) or a brand message.

    AlimTalk ``text`` is the template as registered, with ``#{name}`` placeholders; ``variables``
    maps each placeholder to a Liquid template filled per recipient. Brand ``text`` is Liquid.
    """

    text: str
    template_code: str | None = None
    title: str | None = None
    variables: tuple[tuple[str, str], ...] = ()
    buttons: tuple[Button, ...] = ()
    image_url: str | None = None
    fallback: SmsMessage | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"text": self.text}
        if self.template_code is not None:
            doc["templateCode"] = self.template_code
        if self.title is not None:
            doc["title"] = self.title
        if self.variables:
            doc["variables"] = dict(self.variables)
        if self.buttons:
            doc["buttons"] = [b.to_json() for b in self.buttons]
        if self.image_url is not None:
            doc["imageUrl"] = self.image_url
        if self.fallback is not None:
            doc["fallback"] = self.fallback.to_json()
        return doc


FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class MessageProblem:
    """One thing wrong with a message, at ``path`` in the campaign (``("message", "buttons", 0, "type")``).

    ``on_key`` says the field's name itself is the problem (an unknown field), not its value.
    """

    path: FieldPath
    text: str
    on_key: bool = False


class MessageError(ValueError):
    """A channel message definition is invalid. ``problems`` lists every problem found, each naming its
    field; the error's own text is the first of them."""

    def __init__(self, text: str, problems: Sequence[MessageProblem] = ()) -> None:
        super().__init__(text)
        self.problems: tuple[MessageProblem, ...] = tuple(problems) or (MessageProblem((), text),)


def where(path: FieldPath) -> str:
    """A field's path as the messages name it.

    >>> where(("message", "buttons", 0, "linkMo"))
    'message.buttons[0].linkMo'
    """
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


def nearest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name nearest a misspelled one, else nothing.

    >>> nearest("lnkMo", ["linkMo", "linkPc"])
    " (did you mean 'linkMo'?)"
    """
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return "".join(f" (did you mean '{match}'?)" for match in close)


class _Problems:
    """The problems of one message, gathered instead of stopping at the first."""

    def __init__(self) -> None:
        self.found: list[MessageProblem] = []

    def add(self, path: FieldPath, text: str, *, on_key: bool = False) -> None:
        self.found.append(MessageProblem(path, text, on_key))

    def unknown_fields(
        self, raw: Mapping[object, object], known: Iterable[str], *, at: FieldPath, what: str, prefix: str = ""
    ) -> None:
        """One problem per field of ``raw`` not in ``known``, at the field's name, with the nearest known name."""
        allowed = set(known)
        for name in sorted(str(k) for k in raw if k not in allowed):
            self.add((*at, name), f"{prefix}unknown {what} field '{name}'{nearest(name, allowed)}", on_key=True)

    def raise_any(self) -> None:
        if self.found:
            first, *_ = self.found
            raise MessageError(first.text, self.found)


def _text(
    raw: Mapping[str, object],
    name: str,
    problems: _Problems,
    *,
    at: FieldPath,
    required: bool = True,
    limit: int = 4000,
) -> str | None:
    """The string field ``name`` of ``raw``; None, with a problem recorded, when it is missing or invalid."""
    value = raw.get(name)
    if value is None and not required:
        return None
    path = (*at, name)
    if not isinstance(value, str) or not value.strip():
        problems.add(path, f"{where(path)} must be a non-empty string")
        return None
    if len(value) > limit:
        problems.add(path, f"{where(path)} is longer than {limit} characters")
        return None
    return value


def _url(value: object, problems: _Problems, *, at: FieldPath) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        problems.add(at, f"{where(at)} must be an http(s) URL")
        return None
    return value


def _buttons(raw: object, problems: _Problems) -> tuple[Button, ...]:
    at: FieldPath = ("message", "buttons")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_BUTTONS:
        problems.add(at, f"message.buttons must be a list of at most {MAX_BUTTONS} buttons")
        return ()
    buttons: list[Button] = []
    for i, item in enumerate(raw):
        path = (*at, i)
        if not isinstance(item, Mapping):
            problems.add(path, f"{where(path)} must be an object")
            continue
        before = len(problems.found)
        problems.unknown_fields(item, _BUTTON_FIELDS, at=path, what="button", prefix=f"{where(path)}: ")
        kind = item.get("type")
        if kind not in BUTTON_TYPES:
            problems.add((*path, "type"), f"{where(path)}.type must be one of {', '.join(BUTTON_TYPES)}")
        name = _text(item, "name", problems, at=path, limit=14)
        links = {
            k: _text(item, k, problems, at=path, required=False, limit=200)
            for k in sorted(_BUTTON_FIELDS - {"type", "name"})
        }
        # A link given but invalid was reported above; these report the missing ones.
        if kind == "WL" and item.get("linkMo") is None:
            problems.add(path, f"{where(path)}.linkMo is required for a web-link (WL) button")
        if kind == "AL" and (item.get("schemeIos") is None or item.get("schemeAndroid") is None):
            problems.add(path, f"{where(path)}: an app-link (AL) button needs schemeIos and schemeAndroid")
        if len(problems.found) == before and name is not None:
            buttons.append(
                Button(
                    type=str(kind),
                    name=name,
                    link_mo=links["linkMo"],
                    link_pc=links["linkPc"],
                    scheme_ios=links["schemeIos"],
                    scheme_android=links["schemeAndroid"],
                )
            )
    return tuple(buttons)


def _sms(raw: object, problems: _Problems, *, at: FieldPath) -> SmsMessage | None:
    if not isinstance(raw, Mapping):
        problems.add(at, f"{where(at)} is required: {{text, title?, imageUrls?}}")
        return None
    before = len(problems.found)
    problems.unknown_fields(raw, ("text", "title", "imageUrls"), at=at, what=where(at))
    text = _text(raw, "text", problems, at=at)
    title = _text(raw, "title", problems, at=at, required=False, limit=200)
    images = raw.get("imageUrls", [])
    urls: list[str | None] = []
    if not isinstance(images, list) or len(images) > MAX_IMAGES:
        problems.add((*at, "imageUrls"), f"{where(at)}.imageUrls must be a list of at most {MAX_IMAGES} image URLs")
    else:
        urls = [_url(u, problems, at=(*at, "imageUrls", i)) for i, u in enumerate(images)]
    if len(problems.found) > before or text is None:
        return None
    return SmsMessage(text=text, title=title, image_urls=tuple(u for u in urls if u is not None))


def _under(path: FieldPath, *fields: str) -> bool:
    """Whether ``path`` is in one of the message's ``fields``."""
    return any(path[:2] == ("message", f) for f in fields)


def parse_sms(raw: object) -> SmsMessage:
    """An SMS campaign's message; ``MessageError`` lists every problem of it."""
    problems = _Problems()
    message = _sms(raw, problems, at=("message",))
    problems.raise_any()
    assert message is not None
    return message


def parse_kakao(raw: object, *, kind: str) -> KakaoMessage:
    """A Kakao campaign's message (``kind`` alimtalk or brand); ``MessageError`` lists every problem of it."""
    at: FieldPath = ("message",)
    problems = _Problems()
    if not isinstance(raw, Mapping):
        problems.add(at, "message is required: {text, templateCode (AlimTalk), variables?, buttons?, fallback?}")
        problems.raise_any()
    assert isinstance(raw, Mapping)
    allowed = {"text", "buttons"} | (
        {"templateCode", "title", "variables", "fallback"} if kind == "alimtalk" else {"imageUrl"}
    )
    problems.unknown_fields(raw, allowed, at=at, what=f"{kind} message")
    text = _text(raw, "text", problems, at=at, limit=ALIMTALK_MAX_CHARS)
    buttons = _buttons(raw.get("buttons"), problems)
    if kind == "brand":
        image = raw.get("imageUrl")
        image_url = None if image is None else _url(image, problems, at=(*at, "imageUrl"))
        problems.raise_any()
        assert text is not None
        return KakaoMessage(text=text, buttons=buttons, image_url=image_url)
    code = _text(raw, "templateCode", problems, at=at, limit=64)
    title = _text(raw, "title", problems, at=at, required=False, limit=50)
    variables = raw.get("variables", {})
    if not isinstance(variables, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        problems.add((*at, "variables"), "message.variables must map each #{placeholder} name to a template string")
        variables = {}
    fallback = None if raw.get("fallback") is None else _sms(raw["fallback"], problems, at=(*at, "fallback"))
    # Placeholders are counted in the parts that could be read: one with a problem of its own is left
    # out, and then no variable is called unused (it may be the missing part's).
    unread = any(_under(p.path, "text", "title", "buttons", "fallback") for p in problems.found)
    parts = ([text] if text else []) + [p for b in buttons for p in b.parts()] + ([title] if title else [])
    if fallback is not None:
        parts += [fallback.text] + ([fallback.title] if fallback.title else [])
    names = {n for part in parts for n in placeholders(part)}
    if len(names) > MAX_PLACEHOLDERS:
        problems.add(at, f"an AlimTalk template has at most {MAX_PLACEHOLDERS} placeholders, this one {len(names)}")
    missing = unfillable(parts, set(variables))
    if missing:
        problems.add(
            (*at, "variables"),
            "message.variables does not say how to fill "
            + ", ".join(f"#{{{n}}}" for n in missing)
            + " (map each to an api_properties or user_properties template)",
        )
    unused = sorted(set(variables) - names)
    if unused and not unread:
        problems.add(
            (*at, "variables"),
            f"message.variables names placeholders the template does not have: {', '.join(unused)}",
        )
    problems.raise_any()
    assert text is not None and code is not None
    return KakaoMessage(
        text=text,
        template_code=code,
        title=title,
        variables=tuple(sorted(variables.items())),
        buttons=buttons,
        fallback=fallback,
    )


def check_sms_size(*, text: str, title: str | None, images: int, where: str) -> SmsSize:
    """Refuse text a gateway would refuse: characters outside CP949 or over 2,000 bytes."""
    bad = unencodable(text + (title or ""))
    if bad:
        raise MessageError(f"{where} has characters a text message cannot carry: {''.join(bad[:5])}")
    size = sms_size(text, title=title, images=images)
    if size.bytes > LMS_MAX_BYTES:
        raise MessageError(f"{where} is {size.bytes} bytes in EUC-KR, over the {LMS_MAX_BYTES}-byte limit")
    if size.title_bytes > TITLE_MAX_BYTES:
        raise MessageError(f"{where} title is {size.title_bytes} bytes, over the {TITLE_MAX_BYTES}-byte limit")
    return size
