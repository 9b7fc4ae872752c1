"""Campaign audiences: Hackle's targeting rules, table by table, then parse errors and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.audience import (
    EVERYONE,
    Audience,
    AudienceError,
    Recipient,
    audience_to_json,
    cohort_names,
    matches,
    parse_audience,
)
from magpie.errors import InvalidCampaign

ABSENT = object()  # a property the recipient does not have


def cond(
    operator: str = "IN",
    value_type: str = "STRING",
    values: Any = ("x",),
    *,
    match: str = "MATCH",
    key: str = "USER_PROPERTY",
    name: str | None = "p",
) -> dict[str, Any]:
    key_json: dict[str, Any] = {"type": key}
    if name is not None:
        key_json["name"] = name
    values = list(values) if isinstance(values, tuple) else values
    return {
        "key": key_json,
        "match": {"type": match, "operator": operator, "valueType": value_type, "values": values},
    }


def never_in_cohort(name: str) -> bool:
    raise AssertionError(f"cohort {name!r} should not be asked about")


def check(condition: dict[str, Any], value: object = ABSENT, **recipient: Any) -> bool:
    """Does a one-condition audience match a recipient whose property ``p`` is ``value``?"""
    properties = {} if value is ABSENT else {"p": value}
    audience = parse_audience([{"conditions": [condition]}])
    return matches(
        audience=audience,
        recipient=Recipient(properties=properties, **recipient),
        in_cohort=never_in_cohort,
    )


# --------------------------------------------------------------------------- #
# Operators by value type (MATCH)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("operator", "values", "user_value", "expected"),
    [
        pytest.param("IN", ["GOLD", "VIP"], "VIP", True, id="in_any_value"),
        pytest.param("IN", ["GOLD"], "SILVER", False, id="in_other_value"),
        pytest.param("IN", ["GOLD"], "gold", False, id="in_is_case_sensitive"),
        pytest.param("IN", ["42"], 42, True, id="in_number_user_value_as_str"),
        pytest.param("IN", [42], "42", True, id="in_number_condition_value_as_str"),
        pytest.param("IN", ["1.5"], 1.5, True, id="in_float_user_value_as_str"),
        pytest.param("IN", ["True"], True, False, id="in_bool_is_not_a_string"),
        pytest.param("IN", [""], "", True, id="in_empty_string"),
        pytest.param("CONTAINS", ["old"], "GOLD", False, id="contains_case_sensitive"),
        pytest.param("CONTAINS", ["OL"], "GOLD", True, id="contains_middle"),
        pytest.param("CONTAINS", ["2"], 123, True, id="contains_number_user_value"),
        pytest.param("CONTAINS", ["x", "L"], "GOLD", True, id="contains_any_value"),
        pytest.param("STARTS_WITH", ["GO"], "GOLD", True, id="starts_with_prefix"),
        pytest.param("STARTS_WITH", ["LD"], "GOLD", False, id="starts_with_suffix"),
        pytest.param("ENDS_WITH", ["LD"], "GOLD", True, id="ends_with_suffix"),
        pytest.param("ENDS_WITH", ["GO"], "GOLD", False, id="ends_with_prefix"),
        pytest.param("GT", ["b"], "c", True, id="gt_lexicographic"),
        pytest.param("GT", ["b"], "b", False, id="gt_equal"),
        pytest.param("GT", ["9"], "10", False, id="gt_is_not_numeric"),
        pytest.param("GTE", ["b"], "b", True, id="gte_equal"),
        pytest.param("GTE", ["b"], "a", False, id="gte_lower"),
        pytest.param("LT", ["b"], "a", True, id="lt_lower"),
        pytest.param("LT", ["b"], "b", False, id="lt_equal"),
        pytest.param("LTE", ["b"], "b", True, id="lte_equal"),
        pytest.param("LTE", ["b"], "c", False, id="lte_higher"),
        pytest.param("LT", ["2024-06-01"], "2024-05-31", True, id="lt_iso_dates_order"),
    ],
)
def test_string_operator_compares_strings(operator, values, user_value, expected):
    assert check(cond(operator, "STRING", values), user_value) is expected


@pytest.mark.parametrize(
    ("operator", "values", "user_value", "expected"),
    [
        pytest.param("IN", [42], 42, True, id="in_int"),
        pytest.param("IN", [42], 42.0, True, id="in_int_equals_float"),
        pytest.param("IN", [1, 2, 3], 3, True, id="in_any_value"),
        pytest.param("IN", [42], 43, False, id="in_other"),
        pytest.param("IN", [42], "42", True, id="in_numeric_string_user_value"),
        pytest.param("IN", ["42"], 42, True, id="in_numeric_string_condition_value"),
        pytest.param("IN", [42], "42.0", True, id="in_decimal_string"),
        pytest.param("IN", [1000], "1e3", True, id="in_exponent_string"),
        pytest.param("IN", [42], "abc", False, id="in_non_numeric_string"),
        pytest.param("IN", [42], " 42", False, id="in_padded_string"),
        pytest.param("IN", [1], True, False, id="in_bool_is_not_a_number"),
        pytest.param("IN", [2**60 + 1], 2**60, False, id="in_large_ints_exact"),
        pytest.param("IN", [2**60 + 1], str(2**60 + 1), True, id="in_large_int_string_exact"),
        pytest.param("GT", [10], 11, True, id="gt_higher"),
        pytest.param("GT", [10], 10, False, id="gt_equal"),
        pytest.param("GT", [9], "10", True, id="gt_numeric_not_lexicographic"),
        pytest.param("GT", [10], -1.5, False, id="gt_negative"),
        pytest.param("GTE", [10], 10, True, id="gte_equal"),
        pytest.param("GTE", [10], 9.99, False, id="gte_lower"),
        pytest.param("LT", [10], 9.99, True, id="lt_lower"),
        pytest.param("LT", [10], 10, False, id="lt_equal"),
        pytest.param("LTE", [10], 10, True, id="lte_equal"),
        pytest.param("LTE", [10], 11, False, id="lte_higher"),
        pytest.param("LT", [10, 100], 50, True, id="lt_any_value"),
        pytest.param("GT", [0], float("nan"), False, id="gt_nan"),
        pytest.param("LT", [0], float("-inf"), False, id="lt_infinity_is_not_a_number"),
        pytest.param("LT", [10], "nan", False, id="lt_nan_string"),
        pytest.param("CONTAINS", [4], 42, False, id="contains_not_for_numbers"),
        pytest.param("STARTS_WITH", [4], 42, False, id="starts_with_not_for_numbers"),
        pytest.param("ENDS_WITH", [2], 42, False, id="ends_with_not_for_numbers"),
    ],
)
def test_number_operator_compares_numbers(operator, values, user_value, expected):
    assert check(cond(operator, "NUMBER", values), user_value) is expected


@pytest.mark.parametrize(
    ("operator", "values", "user_value", "expected"),
    [
        pytest.param("IN", [True], True, True, id="in_true"),
        pytest.param("IN", [True], False, False, id="in_true_vs_false"),
        pytest.param("IN", [False], False, True, id="in_false"),
        pytest.param("IN", [True], "true", True, id="in_string_true"),
        pytest.param("IN", ["false"], False, True, id="in_condition_string_false"),
        pytest.param("IN", [True], "TRUE", False, id="in_string_is_case_sensitive"),
        pytest.param("IN", [True], 1, False, id="in_one_is_not_true"),
        pytest.param("IN", [False], 0, False, id="in_zero_is_not_false"),
        pytest.param("IN", [True, False], "yes", False, id="in_other_string"),
        pytest.param("GT", [False], True, False, id="gt_not_for_booleans"),
        pytest.param("LTE", [True], True, False, id="lte_not_for_booleans"),
        pytest.param("CONTAINS", [True], True, False, id="contains_not_for_booleans"),
    ],
)
def test_boolean_operator_matches_true_and_false(operator, values, user_value, expected):
    assert check(cond(operator, "BOOLEAN", values), user_value) is expected


@pytest.mark.parametrize(
    ("operator", "values", "user_value", "expected"),
    [
        pytest.param("IN", ["1.2.0"], "1.2", True, id="in_missing_patch_is_zero"),
        pytest.param("IN", ["1"], "1.0.0", True, id="in_major_only"),
        pytest.param("IN", ["1.0.0"], "1.0.0+build.5", True, id="in_build_metadata_ignored"),
        pytest.param("IN", ["1.0.0"], "1.0.0-beta", False, id="in_prerelease_differs"),
        pytest.param("IN", ["1.2.0"], 1.2, False, id="in_number_is_not_a_version"),
        pytest.param("IN", ["1.2.0"], "v1.2.0", False, id="in_prefixed_string_is_not_a_version"),
        pytest.param("GT", ["1.2.9"], "1.2.10", True, id="gt_numeric_per_part"),
        pytest.param("GT", ["1.2"], "1.2.0", False, id="gt_equal"),
        pytest.param("GTE", ["1.2"], "1.2.0", True, id="gte_equal"),
        pytest.param("GTE", ["2.0.0"], "1.99.99", False, id="gte_lower"),
        pytest.param("LT", ["1.0.0"], "1.0.0-beta", True, id="lt_prerelease_before_release"),
        pytest.param("LT", ["1.0.0"], "1.0.0", False, id="lt_equal"),
        pytest.param("LTE", ["1.0.0"], "1.0", True, id="lte_equal"),
        pytest.param("LTE", ["1.0.0"], "1.0.1", False, id="lte_higher"),
        pytest.param("LT", ["3.0", "1.0"], "2.0", True, id="lt_any_value"),
        pytest.param("GT", ["1.0.0"], "garbage", False, id="gt_unparsable_user_value"),
        pytest.param("CONTAINS", ["1.2"], "1.2.3", False, id="contains_not_for_versions"),
        pytest.param("STARTS_WITH", ["1"], "1.2.3", False, id="starts_with_not_for_versions"),
        pytest.param("ENDS_WITH", ["3"], "1.2.3", False, id="ends_with_not_for_versions"),
    ],
)
def test_version_operator_compares_semantic_versions(operator, values, user_value, expected):
    assert check(cond(operator, "VERSION", values), user_value) is expected


# Each pair is strictly ascending (semver.org's precedence examples plus Hackle's short forms).
VERSION_ORDER = [
    ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
    ("1.0.0-alpha.beta", "1.0.0-beta"),
    ("1.0.0-beta", "1.0.0-beta.2"),
    ("1.0.0-beta.2", "1.0.0-beta.11"),
    ("1.0.0-beta.11", "1.0.0-rc.1"),
    ("1.0.0-rc.1", "1.0.0"),
    ("1.0.0", "1.0.1"),
    ("1.0.1", "1.1"),
    ("1.2.9", "1.2.10"),
    ("1.9", "1.10"),
    ("9", "10"),
    ("1.99.99", "2"),
    ("0.0.1", "0.1"),
]


@pytest.mark.parametrize(("lower", "higher"), [pytest.param(lo, hi, id=f"{lo}<{hi}") for lo, hi in VERSION_ORDER])
def test_version_order_is_semantic(lower, higher):
    assert check(cond("LT", "VERSION", [higher]), lower)
    assert check(cond("GT", "VERSION", [lower]), higher)
    assert not check(cond("GTE", "VERSION", [higher]), lower)
    assert not check(cond("IN", "VERSION", [higher]), lower)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param("1.2", "1.2.0", id="missing_patch"),
        pytest.param("1", "1.0.0", id="missing_minor_and_patch"),
        pytest.param("1.0.0+a", "1.0.0+b", id="build_metadata"),
        pytest.param("1.0.0-rc.1+x", "1.0-rc.1", id="prerelease_with_short_core"),
    ],
)
def test_version_equal_forms_match_in(left, right):
    assert check(cond("IN", "VERSION", [left]), right)
    assert check(cond("GTE", "VERSION", [left]), right)
    assert check(cond("LTE", "VERSION", [left]), right)


# --------------------------------------------------------------------------- #
# NOT_MATCH, arrays, missing values, EXISTS
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("condition", "user_value", "expected"),
    [
        pytest.param(cond("IN", "STRING", ["GOLD"], match="NOT_MATCH"), "SILVER", True, id="in_other"),
        pytest.param(cond("IN", "STRING", ["GOLD"], match="NOT_MATCH"), "GOLD", False, id="in_same"),
        pytest.param(cond("GT", "NUMBER", [10], match="NOT_MATCH"), 5, True, id="gt_lower"),
        pytest.param(cond("GT", "NUMBER", [10], match="NOT_MATCH"), "abc", True, id="wrong_type_negated"),
        pytest.param(cond("CONTAINS", "NUMBER", [1], match="NOT_MATCH"), 1, True, id="inapplicable_negated"),
        pytest.param(cond("LT", "VERSION", ["2.0"], match="NOT_MATCH"), "2.0.0", True, id="version_lt"),
        pytest.param(cond("IN", "BOOLEAN", [True], match="NOT_MATCH"), "true", False, id="boolean_string"),
    ],
)
def test_not_match_negates_operator_result(condition, user_value, expected):
    assert check(condition, user_value) is expected


@pytest.mark.parametrize(
    ("condition", "user_value", "expected"),
    [
        pytest.param(cond("IN", "STRING", ["b"]), ["a", "b"], True, id="match_any_element"),
        pytest.param(cond("IN", "STRING", ["z"]), ["a", "b"], False, id="match_no_element"),
        pytest.param(cond("IN", "STRING", ["b"], match="NOT_MATCH"), ["a", "b"], False, id="not_match_one_hits"),
        pytest.param(cond("IN", "STRING", ["z"], match="NOT_MATCH"), ["a", "b"], True, id="not_match_none_hit"),
        pytest.param(cond("GT", "NUMBER", [10]), [1, "20"], True, id="number_any_element"),
        pytest.param(cond("GT", "NUMBER", [10]), [None, "x", 11], True, id="skips_null_and_wrong_type"),
        pytest.param(cond("IN", "STRING", ["a"]), [["a"]], False, id="nested_array_does_not_match"),
        pytest.param(cond("IN", "STRING", ["a"]), [], False, id="empty_array_match"),
        pytest.param(cond("IN", "STRING", ["a"], match="NOT_MATCH"), [], True, id="empty_array_not_match"),
        pytest.param(cond("IN", "STRING", ["a"]), ("x", "a"), True, id="tuple_is_an_array"),
    ],
)
def test_array_property_matches_when_any_element_matches(condition, user_value, expected):
    assert check(condition, user_value) is expected


OPERATORS = ["IN", "CONTAINS", "STARTS_WITH", "ENDS_WITH", "GT", "GTE", "LT", "LTE"]
SAMPLE_VALUE = {"STRING": "x", "NUMBER": 1, "BOOLEAN": True, "VERSION": "1.0.0"}


@pytest.mark.parametrize("match", ["MATCH", "NOT_MATCH"])
@pytest.mark.parametrize("value_type", list(SAMPLE_VALUE))
@pytest.mark.parametrize("operator", OPERATORS)
def test_missing_property_fails_every_operator_and_match_type(operator, value_type, match):
    condition = cond(operator, value_type, [SAMPLE_VALUE[value_type]], match=match)
    assert check(condition) is False
    assert check(condition, None) is False  # a null value is absent, not a value


@pytest.mark.parametrize(
    ("match", "user_value", "expected"),
    [
        pytest.param("MATCH", "x", True, id="match_present"),
        pytest.param("MATCH", 0, True, id="match_present_zero"),
        pytest.param("MATCH", False, True, id="match_present_false"),
        pytest.param("MATCH", "", True, id="match_present_empty_string"),
        pytest.param("MATCH", [], True, id="match_present_empty_array"),
        pytest.param("MATCH", ABSENT, False, id="match_absent"),
        pytest.param("MATCH", None, False, id="match_null"),
        pytest.param("NOT_MATCH", "x", False, id="not_match_present"),
        pytest.param("NOT_MATCH", ABSENT, True, id="not_match_absent"),
        pytest.param("NOT_MATCH", None, True, id="not_match_null"),
    ],
)
def test_exists_is_presence_and_not_match_exists_is_absence(match, user_value, expected):
    assert check(cond("EXISTS", "STRING", [], match=match), user_value) is expected


def test_exists_values_may_be_omitted():
    condition = cond("EXISTS", "NUMBER")
    del condition["match"]["values"]
    assert check(condition, 1)
    assert (
        audience_to_json(parse_audience([{"conditions": [condition]}]))["targets"][0]["conditions"][0]["match"][
            "values"
        ]
        == []
    )


# --------------------------------------------------------------------------- #
# USER_ID, DEVICE_ID, COHORT
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("condition", "user_id", "expected"),
    [
        pytest.param(cond(key="USER_ID", name=None, values=["u1", "u2"]), "u2", True, id="in_listed"),
        pytest.param(cond(key="USER_ID", name=None, values=["u1"]), "u3", False, id="in_unlisted"),
        pytest.param(cond(key="USER_ID", name=None, values=["u1"]), None, False, id="in_no_user_id"),
        pytest.param(cond(key="USER_ID", name=None, values=["u1"]), "", False, id="in_empty_user_id"),
        pytest.param(
            cond(key="USER_ID", name=None, values=["u1"], match="NOT_MATCH"),
            "u3",
            True,
            id="not_match_unlisted",
        ),
        pytest.param(
            cond(key="USER_ID", name=None, values=["u1"], match="NOT_MATCH"),
            None,
            False,
            id="not_match_anonymous",
        ),
        pytest.param(cond("STARTS_WITH", key="USER_ID", name=None, values=["test-"]), "test-7", True, id="prefix"),
        pytest.param(cond("EXISTS", key="USER_ID", name=None, values=[]), "u1", True, id="exists"),
        pytest.param(cond("EXISTS", key="USER_ID", name=None, values=[]), "", False, id="exists_empty_id"),
        pytest.param(
            cond(key="USER_ID", name=None, values=["u1"], match="NOT_MATCH"),
            "",
            False,
            id="not_match_empty_id",
        ),
        pytest.param(
            cond("EXISTS", key="USER_ID", name=None, values=[], match="NOT_MATCH"), None, True, id="anonymous"
        ),
    ],
)
def test_user_id_condition_reads_the_recipient_user_id(condition, user_id, expected):
    assert check(condition, user_id=user_id) is expected


@pytest.mark.parametrize(
    ("condition", "device_ids", "expected"),
    [
        pytest.param(cond(key="DEVICE_ID", name=None, values=["d2"]), ("d1", "d2", "d3"), True, id="in_any_device"),
        pytest.param(cond(key="DEVICE_ID", name=None, values=["d9"]), ("d1", "d2"), False, id="in_no_device"),
        pytest.param(
            cond(key="DEVICE_ID", name=None, values=["d2"], match="NOT_MATCH"),
            ("d1", "d2"),
            False,
            id="not_one_hits",
        ),
        pytest.param(
            cond(key="DEVICE_ID", name=None, values=["d9"], match="NOT_MATCH"),
            ("d1", "d2"),
            True,
            id="not_none_hit",
        ),
        pytest.param(cond(key="DEVICE_ID", name=None, values=["d1"]), (), False, id="in_without_devices"),
        pytest.param(
            cond(key="DEVICE_ID", name=None, values=["d1"], match="NOT_MATCH"),
            (),
            False,
            id="not_match_no_devices",
        ),
        pytest.param(
            cond("EXISTS", key="DEVICE_ID", name=None, values=[], match="NOT_MATCH"),
            (),
            True,
            id="no_devices",
        ),
    ],
)
def test_device_id_condition_matches_any_of_the_recipient_devices(condition, device_ids, expected):
    assert check(condition, device_ids=device_ids) is expected


@pytest.mark.parametrize(
    ("match", "member_of", "expected"),
    [
        pytest.param("MATCH", {"vip"}, True, id="match_member_of_one"),
        pytest.param("MATCH", {"beta"}, True, id="match_member_of_other"),
        pytest.param("MATCH", set(), False, id="match_member_of_none"),
        pytest.param("MATCH", {"churned"}, False, id="match_member_of_unlisted"),
        pytest.param("NOT_MATCH", set(), True, id="not_match_member_of_none"),
        pytest.param("NOT_MATCH", {"beta"}, False, id="not_match_member_of_one"),
    ],
)
def test_cohort_condition_asks_the_callback(match, member_of, expected):
    audience = parse_audience([{"conditions": [cond(key="COHORT", name=None, values=["vip", "beta"], match=match)]}])
    asked: list[str] = []

    def in_cohort(name: str) -> bool:
        asked.append(name)
        return name in member_of

    assert matches(audience=audience, recipient=Recipient(), in_cohort=in_cohort) is expected
    assert set(asked) <= {"vip", "beta"}


def test_cohort_callback_stops_at_first_membership():
    audience = parse_audience([{"conditions": [cond(key="COHORT", name=None, values=["a", "b", "c"])]}])
    asked: list[str] = []

    def in_cohort(name: str) -> bool:
        asked.append(name)
        return name == "b"

    assert matches(audience=audience, recipient=Recipient(), in_cohort=in_cohort)
    assert asked == ["a", "b"]


def test_cohort_names_lists_every_named_cohort():
    audience = parse_audience(
        [
            {"conditions": [cond(key="COHORT", name=None, values=["vip", "beta"]), cond()]},
            {"conditions": [cond(key="COHORT", name=None, values=["churned", "vip"], match="NOT_MATCH")]},
        ]
    )
    assert cohort_names(audience) == {"vip", "beta", "churned"}


def test_cohort_names_of_audience_without_cohorts_is_empty():
    assert cohort_names(parse_audience([{"conditions": [cond()]}])) == set()
    assert cohort_names(EVERYONE) == set()


# --------------------------------------------------------------------------- #
# Targets and conditions combined; the empty audience
# --------------------------------------------------------------------------- #

GOLD = cond("IN", "STRING", ["GOLD"], name="grade")
ADULT = cond("GTE", "NUMBER", [19], name="age")
KOREA = cond("IN", "STRING", ["KR"], name="country")


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        pytest.param({"grade": "GOLD", "age": 30}, True, id="first_target_all_conditions"),
        pytest.param({"grade": "GOLD", "age": 10}, False, id="first_target_one_condition_fails"),
        pytest.param({"grade": "GOLD"}, False, id="first_target_one_condition_missing"),
        pytest.param({"country": "KR", "age": 10}, True, id="second_target_only"),
        pytest.param({"grade": "GOLD", "age": 30, "country": "KR"}, True, id="both_targets"),
        pytest.param({"grade": "SILVER", "country": "JP"}, False, id="neither_target"),
        pytest.param({}, False, id="no_properties"),
    ],
)
def test_targets_are_ored_and_conditions_anded(properties, expected):
    audience = parse_audience({"targets": [{"conditions": [GOLD, ADULT]}, {"conditions": [KOREA]}]})
    assert matches(audience=audience, recipient=Recipient(properties=properties), in_cohort=never_in_cohort) is (
        expected
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="none"),
        pytest.param({}, id="empty_object"),
        pytest.param({"targets": []}, id="no_targets"),
        pytest.param({"targets": None}, id="null_targets"),
        pytest.param([], id="empty_list"),
    ],
)
def test_empty_audience_matches_everyone(raw):
    audience = parse_audience(raw)
    assert audience == EVERYONE
    assert audience.is_everyone
    assert audience_to_json(audience) == {"targets": []}
    for recipient in (Recipient(), Recipient("u1", ("d1",), {"grade": "GOLD"})):
        assert matches(audience=audience, recipient=recipient, in_cohort=never_in_cohort)


def test_parse_audience_accepts_bare_list_of_targets():
    assert parse_audience([{"conditions": [GOLD]}]) == parse_audience({"targets": [{"conditions": [GOLD]}]})


# --------------------------------------------------------------------------- #
# Parse errors
# --------------------------------------------------------------------------- #


def with_match(**changes: Any) -> dict[str, Any]:
    condition = cond()
    condition["match"].update(changes)
    return condition


def without_match_field(field: str) -> dict[str, Any]:
    condition = cond()
    del condition["match"][field]
    return condition


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("GOLD", "audience must be null, an object with a 'targets' list", id="audience_string"),
        pytest.param({"targets": {}}, "audience must be null, an object with a 'targets' list", id="targets_object"),
        pytest.param(["x"], "audience target 0: a target must be an object with a 'conditions' list", id="target"),
        pytest.param([{}], "audience target 0: a target must be an object", id="target_without_conditions"),
        pytest.param(
            [{"conditions": [cond()]}, {"conditions": []}],
            "audience target 1: a target needs at least one condition",
            id="target_with_empty_conditions",
        ),
        pytest.param(
            [{"conditions": [cond(), "x"]}],
            "audience target 0, condition 1: a condition must be an object",
            id="condition_not_object",
        ),
        pytest.param(
            [{"conditions": [{"match": cond()["match"]}]}],
            "audience target 0, condition 0: 'key' must be an object",
            id="key_missing",
        ),
        pytest.param(
            [{"conditions": [{"key": {"type": "USER_ID"}}]}],
            "audience target 0, condition 0: 'match' must be an object",
            id="match_missing",
        ),
        pytest.param(
            [{"conditions": [cond(key="SEGMENT")]}],
            "audience target 0, condition 0: unknown key type 'SEGMENT' (expected one of USER_ID, DEVICE_ID, "
            "USER_PROPERTY, COHORT)",
            id="unknown_key_type",
        ),
        pytest.param(
            [{"conditions": [cond(name=None)]}],
            "audience target 0, condition 0: USER_PROPERTY needs a non-empty 'name'",
            id="property_name_missing",
        ),
        pytest.param(
            [{"conditions": [cond(name="")]}],
            "audience target 0, condition 0: USER_PROPERTY needs a non-empty 'name'",
            id="property_name_empty",
        ),
        pytest.param(
            [{"conditions": [cond(match="MAYBE")]}],
            "audience target 0, condition 0: unknown match type 'MAYBE' (expected one of MATCH, NOT_MATCH)",
            id="unknown_match_type",
        ),
        pytest.param(
            [{"conditions": [cond("REGEX")]}],
            "audience target 0, condition 0: unknown operator 'REGEX'",
            id="unknown_operator",
        ),
        pytest.param(
            [{"conditions": [cond("in")]}],
            "audience target 0, condition 0: unknown operator 'in'",
            id="operator_is_case_sensitive",
        ),
        pytest.param(
            [{"conditions": [cond(value_type="DATE")]}],
            "audience target 0, condition 0: unknown value type 'DATE' (expected one of STRING, NUMBER, "
            "BOOLEAN, VERSION)",
            id="unknown_value_type",
        ),
        pytest.param(
            [{"conditions": [without_match_field("valueType")]}],
            "audience target 0, condition 0: unknown value type None",
            id="value_type_missing",
        ),
        pytest.param(
            [{"conditions": [cond(values="GOLD")]}],
            "audience target 0, condition 0: 'values' must be a list",
            id="values_not_list",
        ),
        pytest.param(
            [{"conditions": [without_match_field("values")]}],
            "audience target 0, condition 0: 'values' must be a list",
            id="values_missing",
        ),
        pytest.param(
            [{"conditions": [cond(values=[])]}],
            "audience target 0, condition 0: 'values' must not be empty for IN",
            id="values_empty",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "NUMBER", [1, "abc"])]}],
            "audience target 0, condition 0, value 1: NUMBER value 'abc' is not numeric",
            id="number_value_not_numeric",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "NUMBER", [True])]}],
            "audience target 0, condition 0, value 0: NUMBER value True is not numeric",
            id="number_value_boolean",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "NUMBER", [float("inf")])]}],
            "audience target 0, condition 0, value 0: NUMBER value inf is not numeric",
            id="number_value_infinite",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "VERSION", ["1.2.x"])]}],
            "audience target 0, condition 0, value 0: VERSION value '1.2.x' is not a version",
            id="version_value_unparsable",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "VERSION", ["01.2"])]}],
            "audience target 0, condition 0, value 0: VERSION value '01.2' is not a version",
            id="version_value_leading_zero",
        ),
        pytest.param(
            [{"conditions": [cond("GT", "VERSION", [1])]}],
            "audience target 0, condition 0, value 0: VERSION value 1 is not a version",
            id="version_value_number",
        ),
        pytest.param(
            [{"conditions": [cond("IN", "BOOLEAN", ["yes"])]}],
            "audience target 0, condition 0, value 0: BOOLEAN value 'yes' is not true or false",
            id="boolean_value_other",
        ),
        pytest.param(
            [{"conditions": [cond("IN", "STRING", [None])]}],
            "audience target 0, condition 0, value 0: STRING value None is not a string or number",
            id="string_value_null",
        ),
        pytest.param(
            [{"conditions": [cond("IN", "NUMBER", [1], key="COHORT", name=None)]}],
            "audience target 0, condition 0: COHORT values are cohort names, so valueType must be STRING",
            id="cohort_value_type_not_string",
        ),
        pytest.param(
            [{"conditions": [cond("CONTAINS", key="COHORT", name=None)]}],
            "audience target 0, condition 0: COHORT supports only the IN operator, not CONTAINS",
            id="cohort_operator_not_in",
        ),
        pytest.param(
            [{"conditions": [cond(key="COHORT", name=None, values=[])]}],
            "audience target 0, condition 0: 'values' must not be empty for IN",
            id="cohort_values_empty",
        ),
        pytest.param(
            [{"conditions": [cond()]}, {"conditions": [cond(), cond(), cond("NOPE")]}],
            "audience target 1, condition 2: unknown operator 'NOPE'",
            id="names_later_target_and_condition",
        ),
    ],
)
def test_parse_audience_rejects_invalid_definition(raw, message):
    with pytest.raises(InvalidCampaign) as caught:
        parse_audience(raw)
    assert isinstance(caught.value, AudienceError)
    assert caught.value.code == "INVALID_CAMPAIGN"
    assert message in caught.value.message


# --------------------------------------------------------------------------- #
# Canonical JSON
# --------------------------------------------------------------------------- #


def test_audience_to_json_normalises_values_and_drops_unused_names():
    raw = {
        "targets": [
            {
                "conditions": [
                    cond("GT", "NUMBER", ["42", 1.5, "1e3"], name="age"),
                    cond("IN", "STRING", [7, "x"], name="grade"),
                    cond("IN", "BOOLEAN", ["true", False], name="push"),
                    cond("LT", "VERSION", ["1.2"], name="app_version"),
                    cond(key="USER_ID", name="$userId", values=["u1"]),
                    cond(key="COHORT", name="ignored", values=["vip"], match="NOT_MATCH"),
                ],
                "extra": "ignored",
            }
        ],
        "note": "ignored",
    }
    assert audience_to_json(parse_audience(raw)) == {
        "targets": [
            {
                "conditions": [
                    cond("GT", "NUMBER", [42, 1.5, 1000.0], name="age"),
                    cond("IN", "STRING", ["7", "x"], name="grade"),
                    cond("IN", "BOOLEAN", [True, False], name="push"),
                    cond("LT", "VERSION", ["1.2"], name="app_version"),
                    cond(key="USER_ID", name=None, values=["u1"]),
                    cond(key="COHORT", name=None, values=["vip"], match="NOT_MATCH"),
                ]
            }
        ]
    }


def test_audience_to_json_round_trips():
    raw = {"targets": [{"conditions": [GOLD, ADULT]}, {"conditions": [KOREA]}]}
    json_form = audience_to_json(parse_audience(raw))
    assert json_form == raw
    assert parse_audience(json_form) == parse_audience(raw)


def test_recipient_defaults_to_anonymous_without_devices_or_properties():
    assert Recipient() == Recipient(user_id=None, device_ids=(), properties={})


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

versions = st.builds(
    lambda core, pre, build: ".".join(map(str, core)) + (f"-{pre}" if pre else "") + (f"+{build}" if build else ""),
    st.lists(st.integers(0, 30), min_size=1, max_size=3),
    st.sampled_from(["", "alpha", "alpha.1", "beta.2", "rc.1", "0", "x-y"]),
    st.sampled_from(["", "build.5"]),
)
numbers = st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
CONDITION_VALUES = {
    "STRING": st.text(max_size=5) | st.integers(-100, 100),
    "NUMBER": numbers | numbers.map(str),
    "BOOLEAN": st.booleans() | st.sampled_from(["true", "false"]),
    "VERSION": versions,
}
scalars = (
    st.text(max_size=5)
    | numbers
    | numbers.map(str)
    | st.floats()
    | st.booleans()
    | st.sampled_from(["true", "false", "1.2", "1.2.0", "1.0.0-beta"])
    | versions
)
present_values = scalars | st.lists(scalars | st.none(), max_size=4) | st.dictionaries(st.text(max_size=2), scalars)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    value_type = draw(st.sampled_from(list(CONDITION_VALUES)))
    operator = draw(st.sampled_from([*OPERATORS, "EXISTS"]))
    min_size = 0 if operator == "EXISTS" else 1
    values = draw(st.lists(CONDITION_VALUES[value_type], min_size=min_size, max_size=3))
    return cond(operator, value_type, values)


@settings(max_examples=500, deadline=None)
@given(condition=conditions(), value=present_values)
def test_not_match_is_negation_of_match_when_property_present(condition, value):
    negated = {**condition, "match": {**condition["match"], "type": "NOT_MATCH"}}
    assert check(negated, value) is (not check(condition, value))


@settings(max_examples=200, deadline=None)
@given(condition=conditions())
def test_missing_property_fails_unless_not_match_exists(condition):
    negated = {**condition, "match": {**condition["match"], "type": "NOT_MATCH"}}
    assert check(condition) is False
    assert check(negated) is (condition["match"]["operator"] == "EXISTS")


@settings(max_examples=200, deadline=None)
@given(targets=st.lists(st.lists(conditions(), min_size=1, max_size=3), max_size=3))
def test_audience_json_round_trips(targets):
    audience = parse_audience([{"conditions": target} for target in targets])
    json_form = audience_to_json(audience)
    assert parse_audience(json_form) == audience
    assert audience_to_json(parse_audience(json_form)) == json_form
    assert isinstance(audience, Audience)
