"""Where a file stops being UTF-8: the readers turn a decoding error into a
:class:`FileUnreadable` that names the line, the byte offset and the bytes."""

from __future__ import annotations

import codecs
from pathlib import Path

from mysimbdp.errors import FileUnreadable

__all__ = ["unreadable_utf8", "utf8_problem"]


def utf8_problem(path: Path, chunk_bytes: int) -> str | None:
    """Where ``path`` stops being UTF-8 (byte offset, line and bytes), or None if it is valid."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    newlines = 0
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad_at = offset - pending + exc.start
                line = newlines + exc.object.count(b"\n", 0, exc.start) + 1
                bad = exc.object[exc.start : exc.end]
                return f"line {line}: not valid UTF-8 at byte {bad_at} ({bad!r}); save the file as UTF-8"
            newlines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pending = len(decoder.getstate()[0])
            return (
                f"line {newlines + 1}: not valid UTF-8 at byte {offset - pending}: the file ends inside "
                "a multi-byte character; save the file as UTF-8"
            )
    return None


def unreadable_utf8(path: Path, exc: UnicodeDecodeError, chunk_bytes: int) -> FileUnreadable:
    """The error for a file a reader failed to decode, located by reading it again in
    ``chunk_bytes`` pieces."""
    return FileUnreadable(utf8_problem(path, chunk_bytes) or f"not valid UTF-8: {exc}")
