"""Hackle's ten user-property operations: table-driven rules and a reference model.

The reference model at the bottom of the "property-based" section is written from the
product rules alone (it does not call any magpie helper), and hypothesis checks that
``apply_operations(parse_operations(ops))`` agrees with it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.operations import apply_operations, parse_operations
from magpie.errors import InvalidRequest

CLEAR = {"clearAll": "-"}  # what the Hackle SDK sends for clear_all()
BIG = 2**53  # the first integer where float() starts to lose information


def run(properties: dict[str, Any], operations: object) -> dict[str, Any]:
    return apply_operations(properties=properties, operations=parse_operations(operations))


def typed(value: Any) -> Any:
    """A form of ``value`` where 1, 1.0 and True no longer compare equal."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    return (type(value).__name__, value)


def assert_same(actual: Any, expected: Any) -> None:
    assert typed(actual) == typed(expected), f"{actual!r} != {expected!r}"


# --------------------------------------------------------------------------- #
# Table-driven rules
# --------------------------------------------------------------------------- #

SEED = {
    "$set": {"age": 30, "grade": "GOLD"},
    "$setOnce": {"sign_up_date": "2024-01-01"},
    "$unset": {"membership_type": "-"},
}


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param(
            {},
            SEED,
            {"age": 30, "grade": "GOLD", "sign_up_date": "2024-01-01"},
            id="seed_on_empty_profile",
        ),
        pytest.param(
            {"membership_type": "PREMIUM", "grade": "SILVER", "sign_up_date": "2023-05-01", "city": "Seoul"},
            SEED,
            {"age": 30, "grade": "GOLD", "sign_up_date": "2023-05-01", "city": "Seoul"},
            id="seed_on_existing_profile",
        ),
    ],
)
def test_seed_request_applies_set_set_once_and_unset(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({}, {"$set": {"a": 1}}, {"a": 1}, id="absent_key_is_added"),
        pytest.param({"a": 1}, {"$set": {"a": "x"}}, {"a": "x"}, id="present_key_is_overwritten"),
        pytest.param({"a": [1]}, {"$set": {"a": True}}, {"a": True}, id="array_overwritten_by_bool"),
        pytest.param({"a": 1}, {"$set": {"a": ["x", 2.5]}}, {"a": ["x", 2.5]}, id="scalar_overwritten_by_array"),
        pytest.param({"a": 1}, {"$set": {"a": 1.0}}, {"a": 1.0}, id="int_overwritten_by_equal_float"),
        pytest.param({"b": 2}, {"$set": {}}, {"b": 2}, id="empty_body_is_a_no_op"),
    ],
)
def test_set_overwrites(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({}, {"$setOnce": {"a": 1}}, {"a": 1}, id="absent_key_is_set"),
        pytest.param({"a": 1}, {"$setOnce": {"a": 2}}, {"a": 1}, id="present_key_is_kept"),
        pytest.param({"a": 0}, {"$setOnce": {"a": 5}}, {"a": 0}, id="present_zero_is_kept"),
        pytest.param({"a": ""}, {"$setOnce": {"a": "x"}}, {"a": ""}, id="present_empty_string_is_kept"),
        pytest.param({"a": False}, {"$setOnce": {"a": True}}, {"a": False}, id="present_false_is_kept"),
        pytest.param({"a": []}, {"$setOnce": {"a": [1]}}, {"a": []}, id="present_empty_array_is_kept"),
    ],
)
def test_set_once_sets_only_absent_keys(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({"a": 1, "b": 2}, {"$unset": {"a": "-"}}, {"b": 2}, id="present_key_is_removed"),
        pytest.param({"b": 2}, {"$unset": {"a": "-"}}, {"b": 2}, id="absent_key_is_a_no_op"),
        pytest.param({"a": 1}, {"$unset": {"a": None}}, {}, id="null_value_is_ignored"),
        pytest.param({"a": 1}, {"$unset": {"a": {"x": [[1]]}}}, {}, id="object_value_is_ignored"),
        pytest.param({"a": 1}, {"$unset": {"a": "x" * 5000}}, {}, id="long_value_is_ignored"),
    ],
)
def test_unset_removes_keys_whatever_the_value(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({"n": 5}, {"$increment": {"n": 2}}, {"n": 7}, id="int_plus_int_stays_int"),
        pytest.param({"n": 5}, {"$increment": {"n": -7}}, {"n": -2}, id="negative_increment"),
        pytest.param({"n": 1.5}, {"$increment": {"n": 0.25}}, {"n": 1.75}, id="float_plus_float"),
        pytest.param({"n": 1}, {"$increment": {"n": 0.5}}, {"n": 1.5}, id="int_plus_float_is_float"),
        pytest.param({"n": 0.5}, {"$increment": {"n": 2}}, {"n": 2.5}, id="float_plus_int_is_float"),
        pytest.param({}, {"$increment": {"n": 3}}, {"n": 3}, id="missing_becomes_int_increment"),
        pytest.param({}, {"$increment": {"n": 2.5}}, {"n": 2.5}, id="missing_becomes_float_increment"),
        pytest.param({"n": "10"}, {"$increment": {"n": 1}}, {"n": "10"}, id="string_property_unchanged"),
        pytest.param({"n": True}, {"$increment": {"n": 1}}, {"n": True}, id="bool_property_unchanged"),
        pytest.param({"n": [1]}, {"$increment": {"n": 1}}, {"n": [1]}, id="array_property_unchanged"),
        pytest.param({"n": 5}, {"$increment": {"n": "1"}}, {"n": 5}, id="string_increment_ignored"),
        pytest.param({"n": 5}, {"$increment": {"n": True}}, {"n": 5}, id="bool_increment_ignored"),
        pytest.param({"n": 5}, {"$increment": {"n": False}}, {"n": 5}, id="false_increment_ignored"),
        pytest.param({"n": 5}, {"$increment": {"n": [1]}}, {"n": 5}, id="array_increment_ignored"),
        pytest.param({}, {"$increment": {"n": "1"}}, {}, id="missing_with_string_increment_stays_missing"),
        pytest.param({}, {"$increment": {"n": True}}, {}, id="missing_with_bool_increment_stays_missing"),
    ],
)
def test_increment_adds_numbers_only(properties, operations, expected):
    assert_same(run(properties, operations), expected)


def _array_case(op, prop, value, expected, name):
    properties = {} if prop is _MISSING else {"x": prop}
    return pytest.param(properties, {op: {"x": value}}, {"x": expected}, id=name)


_MISSING = object()

ARRAY_CASES = [
    # $append
    _array_case("$append", _MISSING, "c", ["c"], "append_missing_scalar_input"),
    _array_case("$append", _MISSING, ["c", "a"], ["c", "a"], "append_missing_array_input"),
    _array_case("$append", "a", "c", ["a", "c"], "append_scalar_scalar_input"),
    _array_case("$append", "a", ["c", "a"], ["a", "c", "a"], "append_scalar_array_input"),
    _array_case("$append", ["a", "b"], "c", ["a", "b", "c"], "append_array_scalar_input"),
    _array_case("$append", ["a", "b"], ["c", "a"], ["a", "b", "c", "a"], "append_array_array_input"),
    _array_case("$append", 5, 6, [5, 6], "append_number_property_number_input"),
    _array_case("$append", ["a"], [], ["a"], "append_empty_array_input"),
    # $appendOnce
    _array_case("$appendOnce", _MISSING, "c", ["c"], "append_once_missing_scalar_input"),
    _array_case("$appendOnce", _MISSING, ["c", "a"], ["c", "a"], "append_once_missing_array_input"),
    _array_case("$appendOnce", "a", "c", ["a", "c"], "append_once_scalar_scalar_input"),
    _array_case("$appendOnce", "a", "a", ["a"], "append_once_scalar_present_scalar_input"),
    _array_case("$appendOnce", "a", ["c", "a"], ["a", "c"], "append_once_scalar_array_input"),
    _array_case("$appendOnce", ["a", "b"], "b", ["a", "b"], "append_once_array_present_scalar_input"),
    _array_case("$appendOnce", ["a", "b"], ["c", "a"], ["a", "b", "c"], "append_once_array_array_input"),
    _array_case("$appendOnce", ["a"], ["c", "c", "a"], ["a", "c"], "append_once_dedups_input"),
    _array_case("$appendOnce", ["a", "a"], "b", ["a", "a", "b"], "append_once_keeps_existing_duplicates"),
    _array_case("$appendOnce", [1], 1.0, [1], "append_once_float_equals_present_int"),
    _array_case("$appendOnce", [1.0], 1, [1.0], "append_once_int_equals_present_float"),
    _array_case("$appendOnce", ["1"], 1, ["1", 1], "append_once_number_differs_from_string"),
    _array_case("$appendOnce", [1], "1", [1, "1"], "append_once_string_differs_from_number"),
    _array_case("$appendOnce", [BIG + 1], float(BIG), [BIG + 1, float(BIG)], "append_once_big_ints_exact"),
    _array_case("$appendOnce", [BIG], float(BIG), [BIG], "append_once_big_int_equals_float"),
    # a boolean scalar property becomes [True]; a boolean is not the number 1
    _array_case("$appendOnce", True, 1, [True, 1], "append_once_bool_property_differs_from_number"),
    # $prepend
    _array_case("$prepend", _MISSING, "c", ["c"], "prepend_missing_scalar_input"),
    _array_case("$prepend", _MISSING, ["c", "a"], ["c", "a"], "prepend_missing_array_input"),
    _array_case("$prepend", "a", "c", ["c", "a"], "prepend_scalar_scalar_input"),
    _array_case("$prepend", "a", ["c", "a"], ["c", "a", "a"], "prepend_scalar_array_input"),
    _array_case("$prepend", ["a", "b"], "c", ["c", "a", "b"], "prepend_array_scalar_input"),
    _array_case("$prepend", ["a", "b"], ["c", "d"], ["c", "d", "a", "b"], "prepend_array_array_input_in_order"),
    # $prependOnce
    _array_case("$prependOnce", _MISSING, "c", ["c"], "prepend_once_missing_scalar_input"),
    _array_case("$prependOnce", _MISSING, ["c", "a"], ["c", "a"], "prepend_once_missing_array_input"),
    _array_case("$prependOnce", "a", "c", ["c", "a"], "prepend_once_scalar_scalar_input"),
    _array_case("$prependOnce", "a", "a", ["a"], "prepend_once_scalar_present_scalar_input"),
    _array_case("$prependOnce", "a", ["c", "a"], ["c", "a"], "prepend_once_scalar_array_input"),
    _array_case("$prependOnce", ["a", "b"], "b", ["a", "b"], "prepend_once_array_present_scalar_input"),
    _array_case("$prependOnce", ["a", "b"], ["c", "d", "a"], ["c", "d", "a", "b"], "prepend_once_array_array_input"),
    _array_case(
        "$prependOnce",
        ["a"],
        ["d", "c", "d", "a", "c"],
        ["d", "c", "a"],
        "prepend_once_dedups_input_keeping_order",
    ),
    _array_case("$prependOnce", [1], [1.0, 2], [2, 1], "prepend_once_float_equals_present_int"),
    _array_case("$prependOnce", [2, 1], [1.0, 1, 3], [3, 2, 1], "prepend_once_dedups_input_int_and_float"),
    _array_case("$prependOnce", ["1"], 1, [1, "1"], "prepend_once_number_differs_from_string"),
    # $remove
    _array_case("$remove", _MISSING, "c", [], "remove_missing_scalar_input"),
    _array_case("$remove", _MISSING, ["c"], [], "remove_missing_array_input"),
    _array_case("$remove", "a", "a", [], "remove_scalar_matching_scalar_input"),
    _array_case("$remove", "a", "c", ["a"], "remove_scalar_other_scalar_input"),
    _array_case("$remove", "a", ["c", "a"], [], "remove_scalar_array_input"),
    _array_case("$remove", ["a", "b", "a"], "a", ["b"], "remove_array_every_occurrence"),
    _array_case("$remove", ["a", "b", "c", "a"], ["a", "c"], ["b"], "remove_array_array_input"),
    _array_case("$remove", ["a", "b"], ["z"], ["a", "b"], "remove_absent_value_is_a_no_op"),
    _array_case("$remove", [1, 1.0, "1", 2], 1, ["1", 2], "remove_numbers_by_value_not_strings"),
    _array_case("$remove", [1, 2], 2.0, [1], "remove_int_by_equal_float"),
    _array_case("$remove", [BIG + 1, BIG], float(BIG), [BIG + 1], "remove_big_ints_exact"),
    _array_case("$appendOnce", [1.5], 2**63 - 1, [1.5, 2**63 - 1], "append_once_largest_int"),
    _array_case("$remove", [2**63 - 1, 1.0], [2**63 - 1], [1.0], "remove_largest_int"),
]


@pytest.mark.parametrize(("properties", "operations", "expected"), ARRAY_CASES)
def test_array_operations_on_missing_scalar_and_array(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({"a": 1, "b": [2]}, {"$clearAll": CLEAR}, {}, id="removes_every_property"),
        pytest.param({}, {"$clearAll": CLEAR}, {}, id="empty_profile"),
        pytest.param(
            {f"k{i}": i for i in range(300)}, {"$clearAll": CLEAR}, {}, id="over_the_limit_profile_is_cleared"
        ),
        pytest.param({"a": 1}, {"$clearAll": {"anything": None}}, {}, id="body_values_are_ignored"),
        pytest.param(
            {"a": 1},
            {"$set": {"b": 2}, "$increment": {"a": 1}, "$append": {"c": "x"}, "$clearAll": CLEAR},
            {},
            id="applies_after_every_other_operation",
        ),
        pytest.param(
            {"a": 1},
            {"$clearAll": CLEAR, "$set": {"b": 2}},
            {},
            id="applies_last_whatever_the_object_order",
        ),
        # Silent in the rules: operations.py skips every empty body, $clearAll included.
        pytest.param({"a": 1}, {"$clearAll": {}}, {}, id="empty_body_still_clears"),
    ],
)
def test_clear_all_removes_every_property(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected"),
    [
        pytest.param({}, {"$set": {"a": 1}, "$setOnce": {"a": 2}}, {"a": 1}, id="set_beats_set_once"),
        pytest.param({"a": 9}, {"$set": {"a": 1}, "$increment": {"a": 5}}, {"a": 1}, id="set_beats_increment"),
        pytest.param({"a": 5}, {"$unset": {"a": "-"}, "$increment": {"a": 1}}, {}, id="unset_beats_increment"),
        pytest.param({"a": 5}, {"$unset": {"a": "-"}, "$set": {"a": 1}}, {"a": 1}, id="set_first_whatever_order"),
        pytest.param(
            {"a": 9},
            {"$setOnce": {"a": 1}, "$unset": {"a": "-"}},
            {"a": 9},
            id="no_op_set_once_still_claims_key",
        ),
        pytest.param({}, {"$append": {"a": "x"}, "$remove": {"a": "x"}}, {"a": ["x"]}, id="append_beats_remove"),
        pytest.param(
            {},
            {"$remove": {"a": "x"}, "$prependOnce": {"a": "y"}, "$prepend": {"a": "z"}},
            {"a": ["z"]},
            id="prepend_beats_prepend_once_and_remove",
        ),
        pytest.param(
            {"a": 1},
            {"$appendOnce": {"a": 2}, "$append": {"a": 3}},
            {"a": [1, 3]},
            id="append_beats_append_once",
        ),
        pytest.param(
            {"a": 1, "b": 1},
            {"$set": {"a": 2}, "$increment": {"a": 10, "b": 10}},
            {"a": 2, "b": 11},
            id="other_keys_of_the_later_operation_still_apply",
        ),
    ],
)
def test_key_in_two_operations_keeps_the_first_in_apply_order(properties, operations, expected):
    assert_same(run(properties, operations), expected)


@pytest.mark.parametrize(
    ("properties", "operations", "expected_len"),
    [
        pytest.param({f"k{i}": i for i in range(127)}, {"$set": {"new": 1}}, 128, id="reaching_128"),
        pytest.param({f"k{i}": i for i in range(128)}, {"$set": {"k0": 2}}, 128, id="overwriting_at_128"),
        pytest.param({f"k{i}": i for i in range(129)}, {"$unset": {"k0": "-"}}, 128, id="unset_back_to_128"),
        pytest.param(
            {f"k{i}": i for i in range(128)},
            {"$set": {"new": 1}, "$unset": {"k0": "-"}},
            128,
            id="add_and_remove_at_128",
        ),
        pytest.param({f"k{i}": i for i in range(200)}, {"$clearAll": CLEAR}, 0, id="clear_all_over_the_limit"),
    ],
)
def test_property_limit_counts_after_the_update(properties, operations, expected_len):
    assert len(run(properties, operations)) == expected_len


@pytest.mark.parametrize(
    "operations",
    [
        pytest.param({"$increment": {"n": 10**400}}, id="increment-huge-int"),
        pytest.param({"$set": {"n": 2**63}}, id="set-int-over-64-bits"),
        pytest.param({"$append": {"n": [1, -(2**63) - 1]}}, id="array-int-over-64-bits"),
        pytest.param({"$set": {"n": float("inf")}}, id="infinite-float"),
    ],
)
def test_number_beyond_64_bits_or_not_finite_is_rejected(operations):
    # msgspec decodes a 400-digit JSON integer to an int; adding it to a float would overflow.
    with pytest.raises(InvalidRequest):
        run({"n": 0.5}, operations)


def test_key_of_128_characters_is_accepted():
    key = "k" * 128
    assert run({}, {"$set": {key: 1}}) == {key: 1}


def test_string_of_1024_characters_is_accepted():
    value = "v" * 1024
    assert run({}, {"$set": {"a": value}, "$append": {"b": [value]}}) == {"a": value, "b": [value]}


@pytest.mark.parametrize(
    ("properties", "operations", "message"),
    [
        pytest.param({}, [], "operations must be an object", id="operations_is_a_list"),
        pytest.param({}, "-", "operations must be an object", id="operations_is_a_string"),
        pytest.param({}, None, "operations must be an object", id="operations_is_null"),
        pytest.param({}, {"$add": {"a": 1}}, "unknown operation '\\$add'", id="unknown_operation"),
        pytest.param({}, {"set": {"a": 1}}, "unknown operation 'set'", id="operation_without_dollar"),
        pytest.param({}, {"$SET": {"a": 1}}, "unknown operation '\\$SET'", id="operation_wrong_case"),
        pytest.param({}, {"$set": ["a"]}, "\\$set must be an object", id="body_is_a_list"),
        pytest.param({}, {"$set": "a"}, "\\$set must be an object", id="body_is_a_string"),
        pytest.param({}, {"$set": None}, "\\$set must be an object", id="body_is_null"),
        pytest.param({}, {"$unset": "-"}, "\\$unset must be an object", id="unset_body_is_a_string"),
        pytest.param({}, {"$clearAll": "-"}, "\\$clearAll must be an object", id="clear_all_body_is_a_string"),
        pytest.param({}, {"$set": {"": 1}}, "must be 1 to 128 characters", id="empty_key"),
        pytest.param({}, {"$set": {"k" * 129: 1}}, "must be 1 to 128 characters", id="key_of_129_characters"),
        pytest.param({}, {"$unset": {"": "-"}}, "must be 1 to 128 characters", id="empty_key_in_unset"),
        pytest.param({}, {"$set": {"$name": 1}}, "reserved", id="dollar_key"),
        pytest.param({}, {"$unset": {"$name": "-"}}, "reserved", id="dollar_key_in_unset"),
        pytest.param({}, {"$increment": {"$n": 1}}, "reserved", id="dollar_key_in_increment"),
        pytest.param({}, {"$set": {"a": "v" * 1025}}, "limited to 1024 characters", id="string_of_1025"),
        pytest.param(
            {},
            {"$append": {"a": ["ok", "v" * 1025]}},
            "limited to 1024 characters",
            id="array_string_of_1025",
        ),
        pytest.param({}, {"$set": {"a": None}}, "not null", id="null_value"),
        pytest.param({}, {"$setOnce": {"a": None}}, "not null", id="null_value_in_set_once"),
        pytest.param({}, {"$set": {"a": {"b": 1}}}, "not dict", id="object_value"),
        pytest.param({}, {"$increment": {"a": {"b": 1}}}, "not dict", id="object_increment"),
        pytest.param({}, {"$set": {"a": [[1]]}}, "arrays may hold only strings and numbers", id="nested_array"),
        pytest.param({}, {"$set": {"a": [True]}}, "arrays may hold only strings and numbers", id="bool_in_array"),
        pytest.param({}, {"$append": {"a": [None]}}, "arrays may hold only strings and numbers", id="null_in_array"),
        pytest.param(
            {},
            {"$remove": {"a": [{"b": 1}]}},
            "arrays may hold only strings and numbers",
            id="object_in_array",
        ),
        pytest.param(
            {f"k{i}": i for i in range(128)},
            {"$set": {"new": 1}},
            "at most 128 properties.*129",
            id="129_properties_after_set",
        ),
        pytest.param(
            {f"k{i}": i for i in range(128)},
            {"$setOnce": {"new": 1}},
            "at most 128 properties",
            id="129_properties_after_set_once",
        ),
        pytest.param(
            {f"k{i}": i for i in range(128)},
            {"$increment": {"new": 1}},
            "at most 128 properties",
            id="129_properties_after_increment",
        ),
        pytest.param(
            {f"k{i}": i for i in range(128)},
            {"$remove": {"new": 1}},
            "at most 128 properties",
            id="129_properties_after_remove_on_missing",
        ),
        pytest.param(
            {f"k{i}": i for i in range(129)},
            {"$set": {"k0": 1}},
            "at most 128 properties",
            id="129_properties_stay_129",
        ),
        pytest.param(
            {},
            {"$set": {f"k{i}": i for i in range(129)}},
            "at most 128 properties",
            id="129_properties_in_one_set",
        ),
        # Silent in the rules: a later, ignored occurrence of a key is still validated.
        pytest.param(
            {},
            {"$set": {"a": 1}, "$append": {"a": None}},
            "not null",
            id="ignored_later_occurrence_still_validated",
        ),
    ],
)
def test_invalid_request_is_rejected(properties, operations, message):
    with pytest.raises(InvalidRequest, match=message) as caught:
        run(properties, operations)
    assert type(caught.value) is InvalidRequest
    assert caught.value.code == "INVALID_REQUEST"
    assert caught.value.status == 400


# --------------------------------------------------------------------------- #
# Reference model
# --------------------------------------------------------------------------- #

ORDER = [
    "$set",
    "$setOnce",
    "$unset",
    "$increment",
    "$append",
    "$appendOnce",
    "$prepend",
    "$prependOnce",
    "$remove",
    "$clearAll",
]


def is_num(value: Any) -> bool:
    return type(value) in (int, float)


def equal(a: Any, b: Any) -> bool:
    """Numbers compare by value (1 == 1.0); otherwise both the type and the value must match."""
    if is_num(a) and is_num(b):
        return a == b
    return type(a) is type(b) and a == b


def contains(items: list[Any], value: Any) -> bool:
    return any(equal(item, value) for item in items)


def as_list(props: dict[str, Any], key: str) -> list[Any]:
    if key not in props:
        return []
    value = props[key]
    return list(value) if isinstance(value, list) else [value]


def model(properties: dict[str, Any], operations: dict[str, Any]) -> dict[str, Any]:
    props = dict(properties)
    claimed: set[str] = set()
    for op in ORDER:
        body = operations.get(op)
        if not body:
            continue
        if op == "$clearAll":
            props = {}
            continue
        for key, value in body.items():
            if key in claimed:
                continue
            claimed.add(key)
            values = value if isinstance(value, list) else [value]
            if op == "$set":
                props[key] = value
            elif op == "$setOnce":
                if key not in props:
                    props[key] = value
            elif op == "$unset":
                if key in props:
                    del props[key]
            elif op == "$increment":
                if not is_num(value):
                    pass
                elif key not in props:
                    props[key] = value
                elif is_num(props[key]):
                    props[key] = props[key] + value
            elif op == "$append":
                props[key] = as_list(props, key) + values
            elif op == "$appendOnce":
                current = as_list(props, key)
                for v in values:
                    if not contains(current, v):
                        current.append(v)
                props[key] = current
            elif op == "$prepend":
                props[key] = values + as_list(props, key)
            elif op == "$prependOnce":
                current = as_list(props, key)
                front: list[Any] = []
                for v in values:
                    if not contains(front, v) and not contains(current, v):
                        front.append(v)
                props[key] = front + current
            elif op == "$remove":
                props[key] = [item for item in as_list(props, key) if not contains(values, item)]
    return props


def test_reference_model_agrees_with_the_table():
    # The model is only worth trusting if it passes the hand-written table too.
    for case in ARRAY_CASES:
        properties, operations, expected = case.values
        assert_same(model(properties, operations), expected)
    assert_same(
        model({"membership_type": "P", "sign_up_date": "old"}, SEED),
        {"age": 30, "grade": "GOLD", "sign_up_date": "old"},
    )


# --------------------------------------------------------------------------- #
# Property-based tests
# --------------------------------------------------------------------------- #

keys = st.sampled_from(["a", "b", "c"])
# A small shared pool, so that array elements, inputs and scalar properties keep colliding.
pool = st.sampled_from([0, 1, 2, 1.0, 2.0, -0.0, "a", "b", "1", ""])
# Numbers chosen to collide: 1 and 1.0, 2**53 and 2**53 + 1 and float(2**53), and the largest int.
colliding_numbers = st.sampled_from([1, 1.0, BIG, BIG + 1, float(BIG), 2**63 - 1])
ints = st.integers(min_value=-3, max_value=3)
floats = st.one_of(
    st.sampled_from([0.5, 1.0, -1.5, float(BIG)]),
    st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False),
)
numbers = st.one_of(ints, floats)
strings = st.text(alphabet="ab1", max_size=3)
array_items = st.one_of(pool, pool, pool, colliding_numbers, ints, floats, strings)
arrays = st.lists(array_items, max_size=5)
scalars = st.one_of(pool, pool, numbers, strings, st.booleans())
values = st.one_of(scalars, arrays)
property_dicts = st.dictionaries(keys, values, max_size=4)


def body(value_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(keys, value_strategy, max_size=3)


BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "$set": body(values),
    "$setOnce": body(values),
    "$unset": body(st.just("-")),
    "$increment": body(st.one_of(numbers, numbers, values)),
    "$append": body(values),
    "$appendOnce": body(values),
    "$prepend": body(values),
    "$prependOnce": body(values),
    "$remove": body(values),
}


@st.composite
def operation_objects(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(list(BODIES)), unique=True, min_size=1, max_size=5))
    operations = {name: draw(BODIES[name]) for name in names}
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        operations["$clearAll"] = dict(CLEAR)
    items = draw(st.permutations(list(operations.items())))  # the object's order must not matter
    return dict(items)


@settings(max_examples=300, deadline=None)
@given(properties=property_dicts, operations=operation_objects())
def test_apply_operations_matches_reference_model(properties, operations):
    assert_same(run(properties, operations), model(properties, operations))


@settings(max_examples=300, deadline=None)
@given(
    properties=property_dicts,
    single=st.sampled_from(list(BODIES)).flatmap(lambda name: st.tuples(st.just(name), BODIES[name])),
)
def test_each_operation_alone_matches_reference_model(properties, single):
    name, operation_body = single
    operations = {name: operation_body}
    assert_same(run(properties, operations), model(properties, operations))


ARRAY_OPS = ["$append", "$appendOnce", "$prepend", "$prependOnce", "$remove"]
colliding_values = st.one_of(colliding_numbers, st.lists(colliding_numbers, max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    properties=st.dictionaries(st.sampled_from("ab"), colliding_values, max_size=2),
    operations=st.dictionaries(
        st.sampled_from(ARRAY_OPS),
        st.dictionaries(st.sampled_from("ab"), colliding_values, max_size=2),
        max_size=3,
    ),
)
def test_array_operations_compare_numbers_by_exact_value(properties, operations):
    assert_same(run(properties, operations), model(properties, operations))


@settings(max_examples=300, deadline=None)
@given(properties=property_dicts, operations=operation_objects())
def test_apply_operations_never_mutates_its_inputs(properties, operations):
    properties_before = copy.deepcopy(properties)
    operations_before = copy.deepcopy(operations)
    parsed = parse_operations(operations)
    parsed_before = copy.deepcopy(parsed)
    result = apply_operations(properties=properties, operations=parsed)
    assert_same(properties, properties_before)
    assert_same(operations, operations_before)
    assert typed(parsed) == typed(parsed_before)
    assert result is not properties


@settings(max_examples=300, deadline=None)
@given(properties=property_dicts, assigned=body(values))
def test_set_then_unset_in_two_requests_leaves_no_trace(properties, assigned):
    after_set = run(properties, {"$set": assigned})
    after_unset = run(after_set, {"$unset": dict.fromkeys(assigned, "-")})
    expected = {key: value for key, value in properties.items() if key not in assigned}
    assert_same(after_unset, expected)


@settings(max_examples=300, deadline=None)
@given(properties=property_dicts, appended=body(values))
def test_append_once_twice_equals_once(properties, appended):
    once = run(properties, {"$appendOnce": appended})
    twice = run(once, {"$appendOnce": appended})
    assert_same(twice, once)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.just(10**400), st.text(max_size=3)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    properties=property_dicts,
    raw=st.one_of(
        json_values,
        st.dictionaries(st.sampled_from([*ORDER, "$nope"]), json_values, max_size=4),
        st.dictionaries(
            st.sampled_from(ORDER),
            st.dictionaries(st.one_of(keys, st.text(max_size=3)), json_values),
            max_size=4,
        ),
    ),
)
def test_any_json_operations_either_parse_or_raise_invalid_request(properties, raw):
    try:
        parsed = parse_operations(raw)
    except InvalidRequest as exc:
        assert exc.code == "INVALID_REQUEST"
        assert exc.message
        return
    # $increment is left out: it is covered by the table tests.
    parsed = [operation for operation in parsed if operation[0] != "$increment"]
    apply_operations(properties=properties, operations=parsed)
