"""The profile's write modes, datasets and indexes: each validation error, named, and the spec each dataset gets."""

from __future__ import annotations

import pytest

from mysimbdp.domain.profile import parse_profile
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec, parse_write_spec
from mysimbdp.errors import ProfileError


def _problems(text: str) -> str:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.yaml")
    return "\n".join(info.value.problems)


def test_defaults_are_append_without_indexes() -> None:
    """A profile without write, datasets or indexes writes every dataset in append mode, unindexed."""
    assert parse_profile("", "p.yaml").write_for("anything") == APPEND


def test_a_dataset_takes_its_own_settings_else_the_profiles() -> None:
    """Top-level write and indexes are every dataset's default; a dataset's own part replaces it."""
    profile = parse_profile(
        "write: {mode: merge, order_by: ts}\nindexes: [[a], [b, c.d]]\n"
        "datasets:\n  snap: {write: {mode: replace}}\n  idx: {indexes: []}\n"
        "stream_apps: [{name: s, streams: ['orders*']}]\n",
        "p.yaml",
    )
    assert profile.write_for("other") == WriteSpec(WriteMode.MERGE, "ts", (("a",), ("b", "c.d")))
    assert profile.write_for("snap") == WriteSpec(WriteMode.REPLACE, None, (("a",), ("b", "c.d")))
    assert profile.write_for("idx") == WriteSpec(WriteMode.MERGE, "ts", ())


def test_replace_for_every_dataset_is_refused_with_a_default_stream_app() -> None:
    """The default stream app takes every stream, so a top-level replace would reach a stream."""
    problems = _problems("write: {mode: replace}")
    assert "stream app 'generic'" in problems and "'replace' is for files only" in problems
    assert parse_profile("write: {mode: replace}\nstream_apps: []", "p.yaml").write_for("x").mode is WriteMode.REPLACE


def test_replace_for_a_dataset_a_stream_app_writes_is_refused() -> None:
    """A dataset in mode replace that a stream app writes (its own, or a stream it matches) is refused, named."""
    problems = _problems("datasets: {orders: {write: {mode: replace}}}\nstream_apps: [{name: s, streams: ['ord*']}]")
    assert "stream app 's': dataset 'orders': write.mode 'replace'" in problems
    problems = _problems("datasets: {snap: {write: {mode: replace}}}\nstream_apps: [{name: s, dataset: snap}]")
    assert "stream app 's': dataset 'snap'" in problems
    parse_profile("datasets: {snap: {write: {mode: replace}}}\nstream_apps: [{name: s, streams: [orders]}]", "p.yaml")


def test_order_by_only_with_merge() -> None:
    """order_by with append or replace is an error naming the field and the mode."""
    assert "order_by 'ts' is only for mode merge (got mode append)" in _problems("write: {order_by: ts}")
    problems = _problems("datasets: {x: {write: {mode: replace, order_by: v}}}\nstream_apps: []")
    assert "datasets.x.write" in problems and "got mode replace" in problems


def test_an_unknown_mode_is_refused() -> None:
    """The mode is append, merge or replace."""
    assert "write.mode: Input should be 'append', 'merge' or 'replace' (got 'upsert')" in _problems(
        "write: {mode: upsert}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('indexes: [["a b"]]', "indexes.0.0: Value error, field 'a b' is not a field path"),
        ("indexes: [[]]", "indexes.0: List should have at least 1 item"),
        ("indexes: [[a, a]]", "index ['a', 'a']: a field is named twice"),
        ("indexes: [" + ", ".join(["[a]"] * 17) + "]", "indexes: List should have at most 16 items"),
        ("write: {mode: merge, order_by: '1x'}", "write.order_by: Value error, field '1x' is not a field path"),
        ("datasets: {Bad: {}}", "datasets.Bad.[key]: Value error, dataset 'Bad' is not valid"),
        ("datasets: {x: {writes: {}}}", "datasets.x.writes: unknown field"),
        ("datasets: {x: {indexes: [['a;drop']]}}", "datasets.x.indexes.0.0: Value error, field 'a;drop'"),
    ],
)
def test_bad_indexes_datasets_and_fields_are_named(text: str, expected: str) -> None:
    """Each malformed index, field path or dataset entry is reported with its place and value."""
    assert expected in _problems(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nope", "not JSON"),
        ('{"mode": "upsert"}', "mode 'upsert' is not one of"),
        ('{"mode": "append", "order_by": "ts"}', "order_by is only for mode merge"),
        ('{"mode": "merge", "indexes": [["a b"]]}', "is not a non-empty list of field paths"),
        ('{"mode": "merge", "extra": 1}', "expected an object"),
    ],
)
def test_the_apps_write_variable_is_checked(text: str, expected: str) -> None:
    """MYSIMBDP_WRITE as the SDK reads it: what is wrong is named."""
    with pytest.raises(ValueError, match=expected):
        parse_write_spec(text)


def test_the_write_variable_round_trips() -> None:
    """What the platform writes into MYSIMBDP_WRITE the SDK reads back the same; "" is append."""
    spec = WriteSpec(WriteMode.MERGE, "meta.ts", (("a",), ("b", "c")))
    assert parse_write_spec(spec.to_json()) == spec and parse_write_spec("") == APPEND
    assert WriteSpec(WriteMode.REPLACE, indexes=(("a",),)).for_replay() == WriteSpec(indexes=(("a",),))
