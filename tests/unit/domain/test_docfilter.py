"""The read API's filter, projection, sort and numeric parameters: what parses to what, and
every bad input refused with a message naming the rule, the place and the limit."""

from __future__ import annotations

import pytest

from mysimbdp.domain.docfilter import (
    MATCH_ALL,
    MAX_DEPTH,
    MAX_FILTER_BYTES,
    MAX_IN,
    MAX_LEAVES,
    MAX_PATH_CHARS,
    MAX_PATH_SEGMENTS,
    And,
    Compare,
    Op,
    Or,
    filter_digest,
    filter_json,
    parse_filter,
)
from mysimbdp.domain.readparams import (
    MAX_FIELDS,
    MISSING,
    SortKind,
    SortSpec,
    assemble,
    bounded_int,
    get_path,
    parse_fields,
    parse_sort,
)
from mysimbdp.errors import FilterError, MysimbdpError


def refused(source: object) -> FilterError:
    with pytest.raises(FilterError) as info:
        parse_filter(source)  # type: ignore[arg-type]
    return info.value


def test_empty_filters_match_everything() -> None:
    """No filter, an empty text and an empty object are all the filter that matches everything."""
    assert parse_filter(None) == parse_filter("") == parse_filter("  ") == parse_filter("{}") == MATCH_ALL


def test_implicit_equality_and_operators_become_an_and_of_comparisons() -> None:
    """Fields and operators side by side are ANDed; a bare value is $eq; paths split on dots."""
    node = parse_filter('{"city": "Oslo", "m.t": {"$gte": 10, "$lt": 20}}')
    assert node == And(
        (
            Compare(("city",), Op.EQ, "Oslo"),
            Compare(("m", "t"), Op.GTE, 10),
            Compare(("m", "t"), Op.LT, 20),
        )
    )
    assert parse_filter({"a": {"$in": [1, "x", None]}}) == Compare(("a",), Op.IN, (1, "x", None))
    assert parse_filter({"a": {"$exists": False}}) == Compare(("a",), Op.EXISTS, False)


def test_and_or_nest() -> None:
    """$and and $or take lists of filters, nested."""
    node = parse_filter({"$or": [{"a": 1}, {"$and": [{"b": True}, {"c": None}]}]})
    assert node == Or((Compare(("a",), Op.EQ, 1), And((Compare(("b",), Op.EQ, True), Compare(("c",), Op.EQ, None)))))


def test_canonical_json_reads_back_and_digest_is_stable() -> None:
    """The canonical text parses to the same AST; equal filters have one digest, others another."""
    node = parse_filter('{"b": 2, "a": {"$in": [1, 2]}}')
    assert parse_filter(filter_json(node)) == node
    assert filter_digest(node) == filter_digest(parse_filter({"b": 2, "a": {"$in": [1, 2]}}))
    assert filter_digest(node) != filter_digest(parse_filter({"b": 3, "a": {"$in": [1, 2]}}))


def test_malformed_json_names_line_column_and_position() -> None:
    """Malformed filter JSON: the error gives where the parser stopped."""
    error = refused('{"a": [1,}')
    assert error.rule == "filter_json"
    assert "not valid JSON" in str(error) and "line 1 column 10 (character 9)" in str(error)
    assert error.fields == {"position": 9, "line": 1, "column": 10}
    assert isinstance(error, MysimbdpError)
    two_lines = refused('{"a": 1,\n "b": }')
    assert "line 2" in str(two_lines)


def test_unknown_operator_is_named_with_the_supported_ones() -> None:
    """An unknown operator (under a field or at the top) is named, and the supported ones listed."""
    error = refused({"a": {"$regex": "x"}})
    assert error.rule == "filter_operator"
    assert "field 'a': unknown operator '$regex'" in str(error)
    assert "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and, $or" in str(error)
    assert error.fields["operator"] == "$regex"
    top = refused({"$where": "1"})
    assert "unknown operator '$where' at the top of a filter" in str(top)
    assert "comparisons go under a field" in str(refused({"$gt": 1}))
    assert "go at the top of a filter" in str(refused({"a": {"$or": [{"b": 1}]}}))


def test_nesting_over_the_limit_names_it() -> None:
    """$and/$or nested deeper than MAX_DEPTH: refused with the limit; at the limit: accepted."""
    inner: dict[str, object] = {"a": 1}
    for _ in range(MAX_DEPTH - 1):
        inner = {"$and": [inner]}
    parse_filter(inner)
    error = refused({"$or": [inner]})
    assert error.rule == "filter_depth"
    assert f"limit of {MAX_DEPTH}" in str(error) and error.fields["limit"] == MAX_DEPTH


def test_in_over_the_limit_names_it() -> None:
    """An $in (or $nin) longer than MAX_IN: refused with the count and the limit."""
    parse_filter({"a": {"$in": list(range(MAX_IN))}})
    error = refused({"a": {"$nin": list(range(MAX_IN + 1))}})
    assert error.rule == "filter_in_limit"
    assert f"field 'a': $nin lists {MAX_IN + 1} values, over the limit of {MAX_IN}" in str(error)


def test_too_many_comparisons_and_too_long_a_text() -> None:
    """More than MAX_LEAVES comparisons, or a text over MAX_FILTER_BYTES: refused with the limit."""
    error = refused({f"f{i}": i for i in range(MAX_LEAVES + 1)})
    assert error.rule == "filter_size" and f"more than {MAX_LEAVES}" in str(error)
    big = '{"a": "' + "x" * MAX_FILTER_BYTES + '"}'
    assert f"over the limit of {MAX_FILTER_BYTES}" in str(refused(big))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"a": {"$gt": {"x": 1}}}, "field 'a': $gt takes a number or a string, got an object"),
        ({"a": {"$lte": None}}, "field 'a': $lte takes a number or a string, got null"),
        ({"a": {"$lt": True}}, "field 'a': $lt takes a number or a string, got a boolean"),
        ({"a": {"$eq": [1]}}, "field 'a': $eq takes a string, number, boolean or null, got an array"),
        ({"a": {"x": 1}}, "got an object (to reach a nested field, use a dotted path such as 'meta.ts')"),
        ({"a": {}}, "got an object"),
        ({"a": {"$in": 3}}, "field 'a': $in takes an array of scalars, got a number"),
        ({"a": {"$in": [1, {"b": 2}]}}, "field 'a': $eq takes a string, number, boolean or null, got an object"),
        ({"a": {"$exists": 1}}, "field 'a': $exists takes true or false, got a number"),
        ({"$and": {"a": 1}}, "$and takes a non-empty array of filters, got an object"),
        ({"$or": []}, "$or takes a non-empty array of filters, got an array"),
        ({"$or": [1]}, "a filter is a JSON object, got a number"),
        ("[1, 2]", "a filter is a JSON object, got an array"),
        ({"a": "x\0y"}, "NUL character"),
    ],
)
def test_type_mismatches_are_named(source: object, message: str) -> None:
    """A value of the wrong type for its operator: the field, the operator and the type found."""
    error = refused(source)
    assert error.rule == "filter_type"
    assert message in str(error)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a..b", "an empty segment"),
        ("a.", "an empty segment"),
        ("a.0", "segment '0' is digits only"),
        ('a"b', "holds a quote"),
        ("a\\b", "a backslash"),
        ("a\nb", "control character"),
        ("x" * (MAX_PATH_CHARS + 1), f"longer than {MAX_PATH_CHARS} characters"),
        (".".join(["a"] * (MAX_PATH_SEGMENTS + 1)), f"over the limit of {MAX_PATH_SEGMENTS}"),
        ("a.$b", "starts with '$'"),
    ],
)
def test_bad_field_paths_are_refused(name: str, message: str) -> None:
    """Field paths: no empty, numeric or '$' segments, no quotes or control characters, bounded."""
    error = refused({name: 1})
    assert error.rule == "field_path"
    assert message in str(error)


def test_field_names_may_hold_other_characters() -> None:
    """Spaces, dashes and non-ASCII letters are fine in names (paths are bound, not spliced)."""
    assert parse_filter({"flight no.dép-time": 1}) == Compare(("flight no", "dép-time"), Op.EQ, 1)


def test_fields_parse_dedupe_and_refuse_overlaps() -> None:
    """fields=a,b.c: paths in order, repeats dropped; overlapping or too many: refused."""
    assert parse_fields(None) == parse_fields(" ") == ()
    assert parse_fields("a, b.c,a") == (("a",), ("b", "c"))
    with pytest.raises(FilterError, match=r"fields 'b' and 'b.c' overlap: keep one"):
        parse_fields("b,b.c")
    with pytest.raises(FilterError, match=rf"over the limit of {MAX_FIELDS}"):
        parse_fields(",".join(f"f{i}" for i in range(MAX_FIELDS + 1)))
    with pytest.raises(FilterError, match="an empty name"):
        parse_fields("a,,b")


def test_get_path_and_assemble() -> None:
    """A value at a nested path or MISSING; projection columns assembled into nested objects."""
    doc = {"a": {"b": None}, "c": [1]}
    assert get_path(doc, ("a", "b")) is None
    assert get_path(doc, ("a", "x")) is MISSING and get_path(doc, ("c", "d")) is MISSING
    assert assemble((("a", "b"), ("c",), ("z",)), ("null", "[1]", None)) == {"a": {"b": None}, "c": [1]}


def test_sort_parses_columns_and_indexed_fields_only() -> None:
    """sort: key (default), ingested_at, or an indexed field; '-' descending; else refused, naming the choices."""
    assert parse_sort(None) == SortSpec()
    assert parse_sort("-ingested_at") == SortSpec(SortKind.INGESTED_AT, (), True)
    spec = parse_sort("-m.ts", indexed={"m.ts", "city"})
    assert spec == SortSpec(SortKind.FIELD, ("m", "ts"), True) and spec.text == "-m.ts"
    with pytest.raises(FilterError, match=r"sort: field 'temp' is not indexed; sort by one of: key, ingested_at, city"):
        parse_sort("temp", indexed={"city"})


def test_numeric_parameters_are_bounded() -> None:
    """limit and friends: a default when absent, an integer in range, else a clear error."""
    assert bounded_int("limit", None, default=100, minimum=1, maximum=1000) == 100
    assert bounded_int("limit", "7", default=100, minimum=1, maximum=1000) == 7
    with pytest.raises(FilterError, match=r"limit 0 is out of range: use 1 to 1000"):
        bounded_int("limit", "0", default=100, minimum=1, maximum=1000)
    with pytest.raises(FilterError, match=r"limit must be an integer, got 'ten'"):
        bounded_int("limit", "ten", default=100, minimum=1, maximum=1000)
