"""Phone numbers: E.164 normalisation with Korea as the default region, and masking."""

from __future__ import annotations

import pytest

from magpie.domain.phone import mask, normalize
from magpie.errors import InvalidPhoneNumber, InvalidRequest


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("010-1234-5678", "+821012345678", id="korean-mobile-dashes"),
        pytest.param("01012345678", "+821012345678", id="korean-mobile-digits"),
        pytest.param("+82 10 1234 5678", "+821012345678", id="korean-international"),
        pytest.param("02-312-3456", "+8223123456", id="seoul-landline"),
        pytest.param("+1 650-253-0000", "+16502530000", id="us-number-keeps-country"),
        pytest.param("+44 20 7946 0958", "+442079460958", id="uk-number"),
    ],
)
def test_normalize_to_e164(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("hello", id="letters"),
        pytest.param("010-1234", id="too-short"),
        pytest.param("+1 000-000-0000", id="invalid-for-region"),
    ],
)
def test_normalize_invalid_number_rejected(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize(raw)
    assert caught.value.code == "INVALID_PHONE_NUMBER"
    assert raw[:8] in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [pytest.param("", id="empty"), pytest.param("   ", id="blank"), pytest.param(1012345678, id="number")],
)
def test_normalize_not_a_string_rejected(raw: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalize(raw)
    assert caught.value.code == "INVALID_REQUEST"
    assert caught.value.message == "phoneNumber must be a non-empty string"


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        pytest.param("+821012345678", "+82 10-****-5678", id="korean-mobile"),
        pytest.param("+16502530000", "+1 65*-***-0000", id="us-number"),
    ],
)
def test_mask_shows_country_and_last_four(e164: str, expected: str) -> None:
    assert mask(e164) == expected
