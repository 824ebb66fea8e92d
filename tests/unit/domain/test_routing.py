"""Which app a file or a stream goes to (``Profile.app_for`` / ``stream_app_for``), why a
file found none (``routing.no_batch_app``), and what ``check-profile`` says about a
profile's routes (``routing.routes`` / ``routing_warnings``)."""

from __future__ import annotations

import pytest

from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import DEFAULT_PROFILE, Profile, parse_profile
from mysimbdp.domain.routing import no_batch_app, routes, routing_warnings
from mysimbdp.errors import ProfileError

CSV, JSONL, JSON = FileFormat.CSV, FileFormat.JSONL, FileFormat.JSON

# Two apps share a name pattern and are told apart by format; a third takes any format.
MIXED = parse_profile(
    """
formats: [csv, jsonl, json]
batch_apps:
  - {name: readings, file_pattern: "readings_*", formats: [jsonl]}
  - {name: legacy, file_pattern: "readings_*", formats: [csv]}
  - {name: devices, file_pattern: "devices_*"}
stream_apps:
  - {name: readings, streams: [readings]}
  - {name: status, streams: [status, "status-*"]}
""",
    "mixed.yaml",
)


def _name(profile: Profile, file_name: str, fmt: FileFormat | None) -> str | None:
    app = profile.app_for(file_name, fmt)
    return None if app is None else app.name


@pytest.mark.parametrize(
    ("file_name", "fmt", "app"),
    [
        ("readings_001.jsonl", JSONL, "readings"),
        ("readings_001.ndjson", JSONL, "readings"),
        ("readings_001.csv", CSV, "legacy"),
        ("readings_001.json", JSON, None),  # the name matches two apps, the format neither
        ("devices_2024.csv", CSV, "devices"),
        ("devices_2024.jsonl", JSONL, "devices"),
        ("devices_2024.json", JSON, "devices"),
        ("other.csv", CSV, None),
        ("other.jsonl", JSONL, None),
        ("readings_001.csv", None, None),  # an unknown format: only an app without formats takes it
        ("devices_2024.xml", None, "devices"),
    ],
)
def test_a_file_goes_to_the_app_that_takes_its_name_and_format(
    file_name: str, fmt: FileFormat | None, app: str | None
) -> None:
    """Each (name, detected format) of a mixed drop finds exactly the app whose pattern and
    formats both take it, or none."""
    assert _name(MIXED, file_name, fmt) == app


def test_the_first_app_in_profile_order_wins() -> None:
    """When two apps take a file, the one listed first runs it; reordering changes the choice."""
    first = parse_profile("batch_apps: [{name: a, file_pattern: 'x_*', formats: [csv]}, {name: b}]\n", "p")
    second = parse_profile("batch_apps: [{name: b}, {name: a, file_pattern: 'x_*', formats: [csv]}]\n", "p")
    assert _name(first, "x_1.csv", CSV) == "a"
    assert _name(first, "x_1.jsonl", JSONL) == "b"
    assert _name(second, "x_1.csv", CSV) == "b"


def test_without_formats_the_choice_is_by_name_alone() -> None:
    """Profiles written before ``formats`` existed choose as they did: by file pattern."""
    profile = parse_profile("batch_apps: [{name: a, file_pattern: 'a_*.csv'}, {name: b, file_pattern: '*.jsonl'}]", "p")
    assert _name(profile, "a_1.csv", CSV) == "a"
    assert _name(profile, "a_1.csv", None) == "a"
    assert _name(profile, "x.jsonl", JSONL) == "b"
    assert _name(profile, "x.csv", CSV) is None


@pytest.mark.parametrize(
    ("stream", "app"),
    [("readings", "readings"), ("status", "status"), ("status-eu", "status"), ("alerts", None), ("reading", None)],
)
def test_a_stream_goes_to_the_first_app_whose_patterns_match(stream: str, app: str | None) -> None:
    """Mixed streams: each is consumed by the app listing it (a pattern counts), another by none."""
    chosen = MIXED.stream_app_for(stream)
    assert (None if chosen is None else chosen.name) == app


def test_a_catch_all_stream_app_takes_what_the_others_leave() -> None:
    """A ``*`` app after the named ones takes every other stream, and only those."""
    profile = parse_profile("stream_apps: [{name: status, streams: [status]}, {name: rest}]\n", "p")
    assert [profile.stream_app_for(s).name for s in ("status", "alerts", "x")] == ["status", "rest", "rest"]  # type: ignore[union-attr]


def test_no_app_reason_names_each_app_and_what_it_missed() -> None:
    """The ``app`` rule's text names the detected format and, app by app in profile order, its
    pattern, its formats and whether the name or the format did not match."""
    reason = no_batch_app(MIXED, "readings_001.json", JSON)
    assert reason == (
        "no batch app takes this file (format json); first match wins: "
        "'readings' takes 'readings_*' as jsonl: the format does not match; "
        "'legacy' takes 'readings_*' as csv: the format does not match; "
        "'devices' takes 'devices_*' as csv/jsonl/json: the name does not match"
    )
    assert "format unknown" in no_batch_app(MIXED, "x.xml", None)


def test_an_app_format_the_profile_refuses_is_a_profile_error() -> None:
    """An app's ``formats`` outside the profile's ``formats`` could never run: the load fails,
    naming the file, the app, the format and the allowed ones."""
    with pytest.raises(ProfileError) as info:
        parse_profile("formats: [csv]\nbatch_apps: [{name: a, formats: [csv, jsonl]}]\n", "acme/profile.yaml")
    [problem] = info.value.problems
    assert problem.startswith("acme/profile.yaml: batch_apps:")
    assert "app 'a': formats ['jsonl'] are not in the profile's formats ['csv']" in problem
    with pytest.raises(ProfileError, match=r"batch_apps\.0\.formats.*at least 1"):
        parse_profile("batch_apps: [{name: a, formats: []}]\n", "p")


def test_shipped_style_profiles_have_no_routing_warnings() -> None:
    """A profile whose every allowed format reaches an app and whose every app can run is clean."""
    assert routing_warnings(MIXED) == []
    assert routing_warnings(DEFAULT_PROFILE) == []


def test_warnings_name_formats_no_app_takes_and_apps_that_never_run() -> None:
    """check-profile warns about an allowed format without an app, an app whose pattern's
    extension contradicts its formats, and apps (batch or stream) shadowed by an earlier one."""
    profile = parse_profile(
        """
formats: [csv, jsonl, json]
batch_apps:
  - {name: a, file_pattern: "*.jsonl", formats: [csv]}
  - {name: b, file_pattern: "x_*", formats: [csv]}
  - {name: c, file_pattern: "x_*", formats: [csv]}
stream_apps:
  - {name: s, streams: [a, b]}
  - {name: t, streams: [b]}
""",
        "p",
    )
    assert routing_warnings(profile) == [
        "format jsonl is allowed but no batch app takes it: every .jsonl/.ndjson file is rejected (rule app); "
        "add jsonl to an app's formats or remove it from formats",
        "format json is allowed but no batch app takes it: every .json file is rejected (rule app); "
        "add json to an app's formats or remove it from formats",
        "batch app 'a' never runs: its file_pattern '*.jsonl' matches only jsonl files and it takes csv",
        "batch app 'c' never runs: 'b' before it takes every file it would (first match wins); "
        "move 'c' first or narrow 'b'",
        "stream app 't' never runs on its own: 's' before it matches every stream it would (b); "
        "move 't' first or narrow the streams of 's'",
    ]


def test_routes_list_each_app_then_what_finds_none() -> None:
    """The routes say, in order, which files and streams go to which app and dataset, and
    that any other file is rejected and any other stream has no app."""
    assert routes(MIXED) == [
        "files (the first app that matches takes the file):",
        "  readings_* as jsonl -> app readings, dataset named after each file's stem",
        "  readings_* as csv -> app legacy, dataset named after each file's stem",
        "  devices_* as csv/jsonl/json -> app devices, dataset named after each file's stem",
        "  any other file -> rejected (rule app)",
        "streams (the first app that matches consumes the stream):",
        "  readings -> app readings, dataset named after the stream, 1-4 instances",
        "  status, status-* -> app status, dataset named after the stream, 1-4 instances",
        "  any other stream -> no app starts; its messages wait in the broker",
    ]
    assert "any other" not in "\n".join(routes(DEFAULT_PROFILE))
