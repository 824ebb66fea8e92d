"""Quarantine replay's pure part (``domain.replay``) and the SDK's line map (``sdk._linemap``):
a replay input read back by the SDK's own reader gives each row its original line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mysimbdp.domain.envelope import Envelope, decode_batch, encode_batch
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.replay import (
    RAW_LIMIT_CHARS,
    message_id,
    plan_batch,
    plan_stream,
    reason_kind,
    released,
    stream_of,
    summarize_reasons,
)
from mysimbdp.errors import AppContractError
from mysimbdp.formats.linemap import load_line_map, remap
from mysimbdp.formats.readers import Record, RecordReader, RowBlock


def _read_back(tmp_path: Path, fmt: FileFormat, text: str, line_map: dict[int, int]) -> list[Record]:
    path = tmp_path / f"replay.{fmt.value}"
    path.write_text(text, encoding="utf-8")
    return list(remap(iter(RecordReader(path, fmt)), line_map))


def test_a_csv_replay_input_gives_every_row_its_original_line(tmp_path: Path) -> None:
    """Header first, then the rows (one spanning two lines, one with too few fields): read
    back, each record carries the line it had in the original file, its data intact."""
    entries = [(4, "a2,-1"), (9, 'a9,"two\nlines"'), (12, "a12"), (15, "a15,x")]
    plan = plan_batch(FileFormat.CSV, "sku,qty", entries)
    assert plan.input_format is FileFormat.CSV and plan.skipped == ()
    records = _read_back(tmp_path, FileFormat.CSV, plan.text, plan.line_map)
    assert [r.line for r in records] == [4, 9, 12, 15]
    assert records[0].data == {"sku": "a2", "qty": "-1"}
    assert records[1].data == {"sku": "a9", "qty": "two\nlines"}
    assert records[2].problem is not None and "expected 2 fields" in records[2].problem
    assert plan.lines == [4, 9, 12, 15]


def test_csv_blocks_are_remapped_too(tmp_path: Path) -> None:
    """The block reader (what the SDK ingests CSV with) gets the original lines as well."""
    plan = plan_batch(FileFormat.CSV, "a,b", [(3, "1,2"), (7, "3,4")])
    path = tmp_path / "replay.csv"
    path.write_text(plan.text)
    items = list(remap(RecordReader(path, FileFormat.CSV).blocks(), plan.line_map))
    assert items == [RowBlock([3, 7], [["1", "2"], ["3", "4"]])]


def test_a_json_array_is_replayed_as_json_lines(tmp_path: Path) -> None:
    """A JSON array's elements (pretty-printed ones too) become compact JSON Lines; one that
    is no JSON value is not replayed and says why."""
    plan = plan_batch(FileFormat.JSON, None, [(2, '{\n  "a": 1\n}'), (5, "{oops"), (6, '{"b": [1, 2]}')])
    assert plan.input_format is FileFormat.JSONL
    assert [line for line, _ in plan.skipped] == [5] and "not a JSON value" in plan.skipped[0][1]
    records = _read_back(tmp_path, FileFormat.JSONL, plan.text, plan.line_map)
    assert [(r.line, r.data) for r in records] == [(2, {"a": 1}), (6, {"b": [1, 2]})]


def test_rows_that_cannot_stand_for_themselves_are_not_replayed() -> None:
    """A negative line (an unreadable reject entry), an empty row, a CSV row cut at the raw
    limit, a CR inside a row and a CSV file whose header is gone are each skipped with a reason."""
    entries = [(-1, "x"), (2, "  "), (3, "a" * RAW_LIMIT_CHARS), (4, "a\rb"), (5, "ok,1")]
    plan = plan_batch(FileFormat.CSV, "a,b", entries)
    assert [line for line, _ in plan.skipped] == [-1, 2, 3, 4]
    assert plan.lines == [5]
    headless = plan_batch(FileFormat.CSV, None, [(5, "ok,1")])
    assert headless.text == "" and headless.line_map == {} and "header" in headless.skipped[0][1]


def test_a_jsonl_replay_keeps_the_lines(tmp_path: Path) -> None:
    plan = plan_batch(FileFormat.JSONL, None, [(10, '{"n": 1}'), (20, "[1]")])
    records = _read_back(tmp_path, FileFormat.JSONL, plan.text, plan.line_map)
    assert [(r.line, r.data) for r in records] == [(10, {"n": 1}), (20, None)]


def test_the_line_map_file_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    plan = plan_batch(FileFormat.JSONL, None, [(10, '{"n": 1}')])
    good = tmp_path / "map.json"
    good.write_bytes(plan.line_map_json())
    assert load_line_map(good) == {1: 10}
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "an", "object"]')
    with pytest.raises(AppContractError, match="MYSIMBDP_LINE_MAP"):
        load_line_map(bad)
    with pytest.raises(AppContractError, match="cannot read"):
        load_line_map(tmp_path / "missing.json")


def test_a_row_missing_from_the_map_is_a_contract_error() -> None:
    """An input line the map does not know would get a wrong key: the run stops instead."""
    with pytest.raises(AppContractError, match="line 3 of the replay input"):
        list(remap(iter([Record(3, {"a": 1}, "", None)]), {2: 7}))


def test_a_quarantined_record_is_republished_under_its_envelope_id() -> None:
    """A record whose transform raised becomes a batch holding one envelope with the
    original id and document. Its broker message id is the entry's: the same entry again
    (a replay after a crash) has the same one, the entry of a second failure another, so the
    broker's duplicate window never drops a message that has to be stored."""
    reason = "message e7: transform raised ValueError: boom"
    message = plan_stream("shop", "clicks", ("stream:clicks:i1", 1), '{"n": 7}', reason)
    assert not isinstance(message, str)
    batch = decode_batch(message.body, "fallback")
    assert (batch.ids, batch.data, message.ids) == (["e7"], [{"n": 7}], ("e7",))
    same = plan_stream("shop", "clicks", ("stream:clicks:i1", 1), '{"n": 7}', reason)
    later = plan_stream("shop", "clicks", ("stream:clicks:i2", 1), '{"n": 7}', reason)
    assert not isinstance(same, str) and not isinstance(later, str)
    assert message.msg_id.startswith("replay-") and same.msg_id == message.msg_id != later.msg_id


def test_a_quarantined_broker_message_is_republished_whole() -> None:
    """A message delivered too often (its body a batch) keeps every envelope id; a body that
    is no valid JSON cannot be replayed."""
    body = encode_batch("shop", "clicks", [Envelope("a", {"n": 1}), Envelope("b", {"n": 2})]).decode()
    message = plan_stream("shop", "clicks", ("stream:clicks:i1", 1), body, "message 1f2e: delivered too often")
    assert not isinstance(message, str) and message.ids == ("a", "b")
    broken = plan_stream(
        "shop", "clicks", ("stream:clicks:i1", 1), "{nope", "message 1f2e: message not valid JSON: unexpected character"
    )
    assert isinstance(broken, str) and "invalid" in broken
    assert isinstance(plan_stream("shop", "clicks", ("stream:clicks:i1", 1), "[]", "message e1: refused"), str)
    assert isinstance(plan_stream("shop", "clicks", ("stream:clicks:i1", 1), "{}", "unreadable reject entry 3"), str)


def test_reasons_are_summarised_by_kind() -> None:
    """The varying parts (message id, value shown) are left out, so one rule is one kind."""
    reasons = [
        "field 'qty': value '-1' is below the min of 0",
        "field 'qty': value '-7' is below the min of 0",
        "message e1: transform raised KeyError: 'x'",
        "message e2: transform raised KeyError: 'x'",
        "expected 2 fields, got 1",
        "transform raised ValueError: invalid literal for int() with base 10: 'n/a'",
        "transform raised ValueError: invalid literal for int() with base 10: '??'",
    ]
    assert reason_kind(reasons[0]) == "field 'qty': value … is below the min of 0"
    assert summarize_reasons(reasons, top=3) == [
        ("field 'qty': value … is below the min of 0", 2),
        ("transform raised KeyError: …", 2),
        ("transform raised ValueError: invalid literal for int() with base 10: …", 2),
    ]


def test_small_helpers() -> None:
    assert message_id("message a:b: why") == ("a:b", "why")
    assert message_id("no id here") is None
    assert stream_of("stream:clicks:i-1") == "clicks" and stream_of("f_123") is None
    assert released([1, 2, 3, 4], [2, 4]) == [1, 3]
    assert orjson.loads(plan_batch(FileFormat.JSONL, None, [(4, "{}")]).line_map_json()) == {"1": 4}


def test_parquet_rows_replay_as_json_lines_under_their_row_numbers() -> None:
    """Quarantined Parquet rows (their raw is compact JSON) make a JSON Lines replay input,
    each line mapped to the row's number in the original file."""
    plan = plan_batch(FileFormat.PARQUET, None, [(10, '{"id":9,"qty":9}'), (20, '{"id":19,"qty":9}')])
    assert plan.input_format is FileFormat.JSONL
    assert plan.text == '{"id":9,"qty":9}\n{"id":19,"qty":9}\n'
    assert plan.line_map == {1: 10, 2: 20}
