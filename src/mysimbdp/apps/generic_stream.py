"""The built-in clientstreamingestapp: every record's ``data`` stored as it is.

Run by the default profile's stream app as ``python -m mysimbdp.apps.generic_stream``,
one process per instance; each consumes ``$MYSIMBDP_STREAM`` into ``$MYSIMBDP_DATASET``
keyed by the envelope id (see ``mysimbdp.sdk.stream``).
"""

from __future__ import annotations

from typing import Any, NoReturn


def keep(record: dict[str, Any]) -> dict[str, Any]:
    return record


def main() -> NoReturn:
    from mysimbdp.sdk.stream import run_stream

    run_stream(keep)


if __name__ == "__main__":
    main()
