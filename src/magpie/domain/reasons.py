"""What each outcome reason code means, in words, for every surface that shows a code to a person.

One table, code to English sentence; a code missing from it is a provider's or gateway's own code,
shown as such. Other languages translate the sentences themselves (``words``): the dashboard's
Korean is in ``magpie.dashboard.catalogue``, keyed by these sentences.

>>> describe("NO_CONSENT")
'The user has not given the consent this message needs.'
>>> describe("E123")
"The provider's own error code."
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

REASONS: Final[dict[str, str]] = {
    # EXCLUDED: magpie decided not to send.
    "UNKNOWN_USER": "No profile with this user or device id exists.",
    "NOT_IN_AUDIENCE": "The user does not match the campaign's audience conditions.",
    "NO_CONSENT": "The user has not given the consent this message needs.",
    "NO_PUSH_TOKEN": "The user has no active push token to send to.",
    "NO_PHONE_NUMBER": "The user has no phone number on file.",
    "NIGHT_TIME_DROPPED": "It was night time and the campaign drops marketing messages at night.",
    "FREQUENCY_CAP": "The user already received as many marketing messages as a frequency cap allows.",
    "DAILY_LIMIT": "The environment's daily limit of paid messages was reached.",
    "CONTROL_GROUP": "The user is in the campaign's control group and is never sent to.",
    "BROADCAST_CANCELLED": "The broadcast occurrence was cancelled before this recipient's turn.",
    # UNKNOWN: the gateway may have taken the message.
    "GATEWAY_UNCONFIRMED": "The gateway may have taken the message but would not confirm it; it is not sent again.",
    # FAILED: magpie's own reasons.
    "CAMPAIGN_INACTIVE": "The campaign was paused or archived before this recipient's turn.",
    "PROVIDER_NOT_CONFIGURED": "The environment has no settings for the provider or gateway this message needs.",
    "RENDER_ERROR": "The message template failed on this user's data.",
    "MESSAGE_TOO_LARGE": "With this user's data the message is larger than the gateways accept.",
    "PROCESSING_ERROR": "magpie could not process this recipient after several attempts.",
    "PAYLOAD_TOO_LARGE": "The push payload is larger than the provider accepts.",
    # FAILED: what providers and gateways answered, in magpie's words.
    "TOKEN_INVALID": "The provider says the push token is no longer valid; it was retired.",
    "UNREGISTERED": "The app was uninstalled or the push token expired; it was retired.",
    "INVALID_ARGUMENT": "The provider refused the message as malformed.",
    "QUOTA_EXCEEDED": "The provider's sending quota was exceeded.",
    "UNAVAILABLE": "The provider was unavailable, also after retries.",
    "INTERNAL": "The provider had an internal error, also after retries.",
    "TIMEOUT": "The provider did not answer in time, also after retries.",
    "CONNECTION_ERROR": "The provider could not be reached, also after retries.",
    "AUTH_ERROR": "The provider refused magpie's credentials.",
    "AUTH_UNAVAILABLE": "The provider's sign-in service could not be reached.",
    "SENDER_ID_MISMATCH": "The push token belongs to another sender (Firebase project).",
    "MMS_IMAGE_UNAVAILABLE": "The MMS image could not be fetched.",
    "MMS_IMAGE_TOO_LARGE": "The MMS image is larger than the gateway accepts.",
    "MMS_IMAGE_NOT_JPEG": "The MMS image is not a JPEG.",
    "MMS_ONE_IMAGE_ONLY": "This gateway sends one image per MMS.",
    "NHN_NO_RESULT": "NHN Cloud accepted the batch but gave no result for this message.",
    "NHN_NO_FILE_ID": "NHN Cloud did not return an id for the uploaded MMS image.",
    "SOLAPI_NO_RESULT": "Solapi accepted the batch but gave no result for this message.",
    "SOLAPI_NO_FILE_ID": "Solapi did not return an id for the uploaded MMS image.",
    "DELIVERY_FAILED": "The gateway reported that the message did not reach the phone.",
    "BadDeviceToken": "APNs says the device token is not valid; it was retired.",
    "DeviceTokenNotForTopic": "APNs says the device token belongs to another app; it was retired.",
    "Unregistered": "APNs says the app is no longer installed; the token was retired.",
    "SANDBOX": "Recorded in the sandbox; nothing was sent.",
    "UNKNOWN": "No reason was recorded.",
}
# Codes built from a provider's own number: the prefix says whose.
PREFIXES: Final[dict[str, str]] = {
    "NHN_": "NHN Cloud refused the message with its result code {}.",
    "SOLAPI_": "Solapi refused the message with its status code {}.",
    "HTTP_": "The provider answered HTTP {} and gave no reason.",
}
PROVIDER_CODE: Final = "The provider's own error code."


def _as_is(sentence: str) -> str:
    return sentence


def describe(code: str | None, *, words: Callable[[str], str] = _as_is) -> str:
    """The sentence for a reason code ('' for none), through ``words`` (a translation) if given.

    >>> describe("NHN_-1000")
    'NHN Cloud refused the message with its result code -1000.'
    """
    if not code:
        return ""
    if code in REASONS:
        return words(REASONS[code])
    for prefix, sentence in PREFIXES.items():
        if code.startswith(prefix):
            # Translated before the provider's number goes in, so the sentence is the catalogue's key.
            return words(sentence).format(code.removeprefix(prefix))
    return words(PROVIDER_CODE)


def sentences() -> list[str]:
    """Every sentence ``describe`` can answer with, before a number is put in: what a translation covers."""
    return [*REASONS.values(), *PREFIXES.values(), PROVIDER_CODE]
