"""LineSource cuts lines in blocks; it must give exactly what reading line by line gives."""

from __future__ import annotations

import functools
import io
import random

import pytest

from mysimbdp.domain.sources import RAW_LIMIT_CHARS
from mysimbdp.formats.csvlines import LineSource
from mysimbdp.formats.jsonarray import over_limit


def _one_by_one(data: bytes, limit: int | None, chunk: int) -> tuple[list[str], list[tuple[int, str, str]]]:
    """The reference: the file object's own readline, one line at a time."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    if limit is None:
        return list(text), []
    lines: list[str] = []
    overlong: list[tuple[int, str, str]] = []
    for number, line in enumerate(iter(functools.partial(text.readline, limit + 2), ""), 1):
        content = line.rstrip("\r\n")
        size = len(content.encode())
        if size > limit:
            if content == line:  # the line goes on: measure the rest
                while piece := text.readline(chunk):
                    rest = piece.rstrip("\r\n")
                    size += len(rest.encode())
                    if rest != piece:
                        break
            overlong.append((number, over_limit("line", size, limit), content[:RAW_LIMIT_CHARS]))
            line = ""
        lines.append(line)
    return lines, overlong


def _blocks(data: bytes, limit: int | None, chunk: int) -> tuple[list[str], list[tuple[int, str, str]]]:
    source = LineSource(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""), limit, chunk)
    return list(source), source.overlong


PIECES = ["a,b", "1,2", "", "é,ü", "x" * 40, "y" * 7, '"q\nr"', "z" * 25, "\x0c", "\u2028"]
ENDS = ["\n", "\r\n", "\r", "\n"]


def _random_file(seed: int) -> bytes:
    rnd = random.Random(seed)
    lines = [rnd.choice(PIECES) + rnd.choice(ENDS) for _ in range(rnd.randint(0, 40))]
    text = "".join(lines)
    if rnd.random() < 0.3:
        text = text.rstrip("\r\n")  # a last line without a line break
    return ("\ufeff" if rnd.random() < 0.2 else "").encode() + text.encode()


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize(("limit", "chunk"), [(None, 7), (30, 5), (30, 64), (12, 13), (200, 3)])
def test_blocks_of_lines_equal_lines_read_one_by_one(seed: int, limit: int | None, chunk: int) -> None:
    data = _random_file(seed)
    lines, overlong = _blocks(data, limit, chunk)
    want_lines, want_overlong = _one_by_one(data, limit, chunk)
    assert lines == want_lines
    assert [item[:2] for item in overlong] == [item[:2] for item in want_overlong]
    # the head of an over-long line: its start, as far as it was held (both are prefixes)
    for got, want in zip(overlong, want_overlong, strict=True):
        assert got[2] and (got[2].startswith(want[2]) or want[2].startswith(got[2]))


def test_line_gives_back_recent_lines() -> None:
    source = LineSource(io.TextIOWrapper(io.BytesIO(b"a\nb\r\nc"), newline=""), None, 2)
    assert list(source) == ["a\n", "b\r\n", "c"]
    assert source.line(3) == "c"
    assert source.line(99) == ""
