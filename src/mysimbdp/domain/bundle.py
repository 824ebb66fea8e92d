"""What a tenant's bundle may name, decided without touching the disk.

A bundle is the profile, its apps' entry points (the ``{bundle}/…`` parts of their commands)
and the files its ``bundle_files`` globs match, all relative to the profile's directory.
These functions say whether a name stays inside that directory and which paths a glob takes;
:mod:`mysimbdp.services.bundles` walks the directory with them and copies.

Globs work as in :mod:`pathlib`: ``*``, ``?`` and ``[…]`` within one path part (a leading dot
included), ``**`` for any number of parts. A glob that matches a directory takes everything
under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = [
    "PROFILE_NAME",
    "AppCommand",
    "BundleGlobs",
    "bundle_path_problem",
    "could_reach",
    "entry_point",
    "entry_points",
    "glob_matches",
    "glob_parts",
]

PROFILE_NAME = "profile.yaml"  # the profile's name inside every bundle, whatever the file was called


def entry_point(part: str) -> str | None:
    """The bundle file one argv part of an app's command names (``{bundle}/app.py`` ->
    ``app.py``, ``--conf={bundle}/c.yaml`` -> ``c.yaml``); None when it names none."""
    if "{bundle}/" not in part:
        return None
    return part.split("{bundle}/", 1)[1] or None


def entry_points(commands: Iterable[list[str]]) -> list[str]:
    """The bundle files some apps' commands name, each once, in order."""
    return list(dict.fromkeys(entry for command in commands for part in command if (entry := entry_point(part))))


def bundle_path_problem(path: str) -> str | None:
    """Why ``path`` (a ``bundle_files`` glob, an entry point) is not a path inside the
    profile's directory, or None."""
    if not path.strip():
        return "is empty"
    if "\x00" in path:
        return "holds a NUL character"
    if path.startswith("/"):
        return "is an absolute path: it lies outside the profile's directory"
    if ".." in PurePosixPath(path).parts:
        return "holds '..': it would reach outside the profile's directory"
    return None


def _command_inside(command: list[str]) -> list[str]:
    for part in command:
        if (entry := entry_point(part)) is not None and (problem := bundle_path_problem(entry)):
            raise ValueError(
                f"part {part!r}: the entry point {entry!r} {problem}; name a file beside the profile, "
                "e.g. {bundle}/app.py"
            )
    return command


# An app's argv (a profile field); its {bundle}/... parts must name files inside the bundle.
AppCommand = Annotated[list[str], Field(min_length=1), AfterValidator(_command_inside)]


def _globs_inside(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        if problem := bundle_path_problem(pattern):
            raise ValueError(f"{pattern!r} {problem}; write a glob relative to the profile, e.g. 'lib/**/*.py'")
    return patterns


# A profile's bundle_files: globs relative to the profile's directory.
BundleGlobs = Annotated[list[str], AfterValidator(_globs_inside)]


def glob_parts(pattern: str) -> tuple[str, ...]:
    """A glob split into path parts, ``.`` dropped and runs of ``**`` made one."""
    parts: list[str] = []
    for part in PurePosixPath(pattern).parts:
        if not (part == "**" and parts and parts[-1] == "**"):
            parts.append(part)
    return tuple(parts)


def glob_matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether the relative ``path`` (its parts) matches the glob ``pattern`` (its parts)."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(glob_matches(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and glob_matches(rest, path[1:])


def could_reach(pattern: tuple[str, ...], directory: tuple[str, ...]) -> bool:
    """Whether the glob ``pattern`` may match something below ``directory``: a walk needs
    to enter only such directories (and those under a match)."""
    if not directory:
        return bool(pattern)
    if not pattern:
        return False
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return True
    return fnmatchcase(directory[0], head) and could_reach(rest, directory[1:])
