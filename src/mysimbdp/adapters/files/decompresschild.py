"""The decompress child: ``python -m mysimbdp.adapters.files.decompresschild``, started by
:func:`mysimbdp.adapters.files.decompress.decompress_contained` in its limited process.

It reads the request (``{"path", "out", "compression", "size", "max_bytes", "max_ratio"}``)
from stdin, decompresses ``path`` into ``out`` (which the parent created empty: the sandbox
lets the child write that one file) and prints ``{"ok": true, "bytes_in", "bytes_out",
"sha256"}`` or ``{"ok": false, "rule", "value"}``. On a failure it empties ``out``; the parent
removes it. Like the scan child it imports only what it reads with.
"""

from __future__ import annotations

import os
import sys

import orjson

from mysimbdp.formats.compression import Compression, DecompressError, decompress

__all__ = ["EXIT_NO_MEMORY", "main"]

EXIT_NO_MEMORY = 3  # the child ran out of its address space (MemoryError)


def main() -> int:
    request = orjson.loads(sys.stdin.buffer.read())
    with open(request["path"], "rb") as src, open(request["out"], "r+b") as dst:
        dst.truncate(0)
        try:
            done = decompress(
                src,
                dst,
                Compression(request["compression"]),
                compressed_size=int(request["size"]),
                max_bytes=int(request["max_bytes"]),
                max_ratio=float(request["max_ratio"]),
            )
        except DecompressError as exc:
            dst.truncate(0)
            sys.stdout.buffer.write(orjson.dumps({"ok": False, "rule": exc.rule, "value": exc.value}))
            return 0
        except MemoryError:
            os.write(2, b"MemoryError: the decompression ran out of its memory limit\n")
            os._exit(EXIT_NO_MEMORY)
    result = {"ok": True, "bytes_in": done.bytes_in, "bytes_out": done.bytes_out, "sha256": done.sha256}
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
