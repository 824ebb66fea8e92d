"""Names the platform accepts: tenant ids, dataset names, file names."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

TENANT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
DATASET_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_FILENAME_BYTES = 255


def tenant_id_problem(tenant_id: str) -> str | None:
    """Why ``tenant_id`` is not acceptable, or None. Ids become schema and role names."""
    if TENANT_ID_RE.fullmatch(tenant_id):
        return None
    return (
        f"tenant id {tenant_id!r} is not valid: use 1-31 characters, lower-case letters, digits "
        "and '_', starting with a letter"
    )


def dataset_from_stem(file_name: str) -> str:
    """Dataset named after a file's stem: lower-cased, other characters become ``_``.

    >>> dataset_from_stem("Flights 2013-01.csv")
    'flights_2013_01'
    """
    stem = PurePath(file_name).name.split(".", 1)[0]
    name = re.sub(r"[^a-z0-9_]", "_", stem.lower())
    if not name or name[0].isdigit():
        name = f"d_{name}"
    return name[:63]


def dataset_problem(name: str) -> str | None:
    if DATASET_RE.fullmatch(name):
        return None
    return f"dataset {name!r} is not valid: use lower-case letters, digits and '_' (max 63)"


def file_name_problems(name: str) -> list[str]:
    """Every reason a file name is unsafe. Spaces and unicode letters are fine."""
    problems: list[str] = []
    if name in ("", ".", ".."):
        return [f"file name {name!r} is empty or a directory reference"]
    if "/" in name or "\\" in name:
        problems.append(f"file name {name!r} contains a path separator")
    if ".." in name.split("/") or name.startswith(".."):
        problems.append(f"file name {name!r} contains '..'")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        problems.append(f"file name {name!r} contains control characters")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
        problems.append(f"file name is longer than {MAX_FILENAME_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"file name {name!r} is not valid UTF-8")
    return problems
