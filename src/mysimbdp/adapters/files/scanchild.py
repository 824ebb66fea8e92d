"""The scan child: ``python -m mysimbdp.adapters.files.scanchild``, started by
:func:`mysimbdp.adapters.files.scanjob.scan_contained` in its limited process.

It reads the request (``{"path", "name", "rules"}``, and ``"sha256"`` when the content's
hash is already known: an upload's, computed while receiving it), the rules as
:meth:`~mysimbdp.adapters.files.scanner.ScanRules.to_json` wrote them) from stdin, scans the
file and prints its :class:`~mysimbdp.domain.facts.FileFacts` as JSON. It imports only the
scanner and what it reads with: no profile models (pydantic), runner or logging, so that a
file's scan costs its bytes, not the platform's imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

from mysimbdp.adapters.files.scanner import ScanRules, scan_file
from mysimbdp.domain.facts import facts_to_json

__all__ = ["EXIT_NO_MEMORY", "main"]

EXIT_NO_MEMORY = 3  # the child ran out of its address space (MemoryError)


def main() -> int:
    request = orjson.loads(sys.stdin.buffer.read())
    rules = ScanRules.from_json(request["rules"])
    try:
        facts = scan_file(Path(request["path"]), request["name"], rules, request.get("sha256", ""))
    except MemoryError:
        os.write(2, b"MemoryError: the scan ran out of its memory limit\n")
        os._exit(EXIT_NO_MEMORY)  # nothing more can be allocated: no cleanup
    sys.stdout.buffer.write(facts_to_json(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
