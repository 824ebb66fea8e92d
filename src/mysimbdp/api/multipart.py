"""The file part of a ``multipart/form-data`` body, as a stream (python-multipart's push parser).

:func:`file_part` yields the data of the body's first part that carries a file name (curl's
``-F file=@x.csv``) as it arrives, never holding the body; other parts are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from mysimbdp.errors import UploadRefused

__all__ = ["boundary_of", "file_part"]


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, None for any other type."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return options.get(b"boundary") or None


class _Collector:
    """The parser's callbacks: which part is the file, and its data fed so far."""

    def __init__(self) -> None:
        self.header_name = b""
        self.header_value = b""
        self.is_file = False
        self.state = "before"  # before -> in (the file part) -> after
        self.data: list[bytes] = []

    def on_part_begin(self) -> None:
        self.is_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition" and self.state == "before":
            _, options = parse_options_header(self.header_value)
            self.is_file = b"filename" in options
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        if self.is_file:
            self.state = "in"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.state == "in" and self.is_file:
            self.data.append(data[start:end])

    def on_part_end(self) -> None:
        if self.state == "in" and self.is_file:
            self.state = "after"
            self.is_file = False


async def file_part(chunks: AsyncIterator[bytes], boundary: bytes, where: str) -> AsyncIterator[bytes]:
    """The file part's bytes from a multipart body; ``where`` ('tenant …: file …') names the
    upload in a refusal: a body with no file part, or one that ends inside it (rule ``multipart``)."""
    collector = _Collector()
    parser = MultipartParser(boundary, {name: getattr(collector, name) for name in _CALLBACKS})  # type: ignore[arg-type]
    async for chunk in chunks:
        try:
            parser.write(chunk)
        except Exception as exc:  # python-multipart's errors (MultipartParseError and kin) on a malformed body
            raise UploadRefused(
                "multipart", f"{where}: rule multipart: the body is not valid multipart: {exc}"
            ) from exc
        for data in collector.data:
            yield data
        collector.data.clear()
    if collector.state != "after":
        found = "ends inside the file part" if collector.state == "in" else "has no part with a filename"
        raise UploadRefused(
            "multipart", f"{where}: rule multipart: the body {found}; send the file as one part (curl -F file=@PATH)"
        )


_CALLBACKS = (
    "on_part_begin",
    "on_header_field",
    "on_header_value",
    "on_header_end",
    "on_headers_finished",
    "on_part_data",
    "on_part_end",
)
