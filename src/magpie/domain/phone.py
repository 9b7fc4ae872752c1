"""Phone numbers: E.164 normalisation (Korean by default) and masking. No I/O."""

from __future__ import annotations

import re

import phonenumbers

from magpie.errors import InvalidPhoneNumber, InvalidRequest

DEFAULT_REGION = "KR"
# What a written phone number is made of. The parser would pick a number out of any text
# ("not-a-phone-01099990000x"); a string with anything else is not a phone number.
_PHONE_TEXT = re.compile(r"\+?[0-9 ().-]{4,32}")


def normalize(raw: object) -> str:
    """The E.164 form of ``raw``; a number without a country code is read as Korean.

    >>> normalize("010-1234-5678")
    '+821012345678'
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest("phoneNumber must be a non-empty string")
    if _PHONE_TEXT.fullmatch(raw.strip()) is None:
        raise InvalidPhoneNumber(
            f"phoneNumber '{raw[:32]}' is not a phone number: only digits, spaces, '+', '-', '(', ')' and '.'"
        )
    try:
        parsed = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"phoneNumber '{raw[:32]}' is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"phoneNumber '{raw[:32]}' is not a valid number for its region")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def mask(e164: str) -> str:
    """Show the country code and the last four digits only.

    >>> mask("+821012345678")
    '+82 10-****-5678'
    """
    parsed = phonenumbers.parse(e164, None)
    shown = str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    prefix = f"+{parsed.country_code} "
    national = shown[len(prefix) :] if shown.startswith(prefix) else shown
    digits_seen = sum(ch.isdigit() for ch in national)
    out: list[str] = []
    index = 0
    for ch in national:
        if ch.isdigit():
            index += 1
            out.append(ch if index <= 2 or index > digits_seen - 4 else "*")
        else:
            out.append(ch)
    return prefix + "".join(out)
