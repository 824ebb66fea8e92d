"""Which app takes a tenant's file or stream, explained: pure text for fetch and check-profile.

The choice itself is the profile's: ``Profile.app_for`` (a file goes to the first batch app
whose ``file_pattern`` matches its name and whose ``formats``, when set, hold its detected
format) and ``Profile.stream_app_for`` (a stream goes to the first stream app with a
matching ``streams`` pattern). This module says why a file found no app (``no_batch_app``),
lists the routes a profile sets (``routes``) and warns about formats no app takes and apps
that can never run (``routing_warnings``).
"""

from __future__ import annotations

import fnmatch
from pathlib import PurePath

from mysimbdp.domain.formats import EXTENSIONS, FileFormat
from mysimbdp.domain.profile import BatchApp, Profile, StreamApp

__all__ = ["no_batch_app", "routes", "routing_warnings"]


def _formats(profile: Profile, app: BatchApp) -> list[FileFormat]:
    """The formats ``app`` can be given: its own ``formats``, else every one the profile allows."""
    return [f for f in profile.formats if app.formats is None or f in app.formats]


def _names(formats: list[FileFormat]) -> str:
    return "/".join(str(f) for f in formats) or "no format"


def _extensions(fmt: FileFormat) -> str:
    return "/".join(ext for ext, of in EXTENSIONS.items() if of is fmt)


def no_batch_app(profile: Profile, file_name: str, fmt: FileFormat | None) -> str:
    """Why no batch app takes ``file_name`` in format ``fmt``: each app and what it missed, in
    profile order (the ``app`` rule's text after ``rule app:``)."""
    misses = []
    for app in profile.batch_apps:
        takes = f"{app.name!r} takes {app.file_pattern!r} as {_names(_formats(profile, app))}"
        if not fnmatch.fnmatch(file_name, app.file_pattern):
            misses.append(f"{takes}: the name does not match")
        elif not app.takes(file_name, fmt):
            misses.append(f"{takes}: the format does not match")
        else:
            misses.append(f"{takes}: it matches")
    return f"no batch app takes this file (format {fmt or 'unknown'}); first match wins: " + "; ".join(misses)


def _file_catch_all(profile: Profile) -> bool:
    """Every allowed format has an app that takes any name in it."""
    return all(
        any(app.file_pattern == "*" and fmt in _formats(profile, app) for app in profile.batch_apps)
        for fmt in profile.formats
    )


def _stream_route(app: StreamApp) -> str:
    dataset = app.dataset or "named after the stream"
    patterns = ", ".join(app.streams)
    return f"  {patterns} -> app {app.name}, dataset {dataset}, {app.min_instances}-{app.max_instances} instances"


def routes(profile: Profile) -> list[str]:
    """The profile's routes as ``check-profile`` prints them: files, then streams."""
    lines = ["files (the first app that matches takes the file):"]
    for app in profile.batch_apps:
        dataset = app.dataset or profile.dataset or "named after each file's stem"
        lines.append(f"  {app.file_pattern} as {_names(_formats(profile, app))} -> app {app.name}, dataset {dataset}")
    if not _file_catch_all(profile):
        lines.append("  any other file -> rejected (rule app)")
    lines.append("streams (the first app that matches consumes the stream):")
    lines.extend(_stream_route(app) for app in profile.stream_apps)
    if not any("*" in app.streams for app in profile.stream_apps):
        lines.append("  any other stream -> no app starts; its messages wait in the broker")
    return lines


def _pattern_format(pattern: str) -> FileFormat | None:
    """The only format a file matching ``pattern`` can have, when its extension says so."""
    return EXTENSIONS.get(PurePath(pattern).suffix)


def _batch_warnings(profile: Profile) -> list[str]:
    warnings = []
    for fmt in profile.formats:
        if not any(fmt in _formats(profile, app) for app in profile.batch_apps):
            warnings.append(
                f"format {fmt} is allowed but no batch app takes it: every {_extensions(fmt)} file is "
                f"rejected (rule app); add {fmt} to an app's formats or remove it from formats"
            )
    for index, app in enumerate(profile.batch_apps):
        takes = _formats(profile, app)
        only = _pattern_format(app.file_pattern)
        if only is not None and only not in takes:
            warnings.append(
                f"batch app {app.name!r} never runs: its file_pattern {app.file_pattern!r} matches only "
                f"{only} files and it takes {_names(takes)}"
            )
            continue
        for earlier in profile.batch_apps[:index]:
            same_names = earlier.file_pattern in ("*", app.file_pattern)
            if same_names and set(takes) <= set(_formats(profile, earlier)):
                warnings.append(
                    f"batch app {app.name!r} never runs: {earlier.name!r} before it takes every file it "
                    f"would (first match wins); move {app.name!r} first or narrow {earlier.name!r}"
                )
                break
    return warnings


def _stream_warnings(profile: Profile) -> list[str]:
    warnings = []
    for index, app in enumerate(profile.stream_apps):
        for earlier in profile.stream_apps[:index]:
            if "*" in earlier.streams or set(app.streams) <= set(earlier.streams):
                warnings.append(
                    f"stream app {app.name!r} never runs on its own: {earlier.name!r} before it matches "
                    f"every stream it would ({', '.join(app.streams)}); move {app.name!r} first or narrow "
                    f"the streams of {earlier.name!r}"
                )
                break
    return warnings


def routing_warnings(profile: Profile) -> list[str]:
    """What the profile lets in but no app takes, and the apps that can never be chosen."""
    return _batch_warnings(profile) + _stream_warnings(profile)
