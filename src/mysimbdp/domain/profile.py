"""Tenant service profiles: YAML, validated, every error naming file, field and value.

A profile says what a tenant may send (formats, sizes, quotas, columns, row rules), which
apps ingest it (argv, file pattern, resources) and where it lands (dataset, key fields, write
mode and indexes: ``domain.writes``).
See ``docs/profile-reference.md`` for every field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from mysimbdp.domain.bundle import AppCommand, BundleGlobs, entry_points
from mysimbdp.domain.formats import FieldType, FileFormat
from mysimbdp.domain.model import StrictModel
from mysimbdp.domain.naming import dataset_from_stem, dataset_problem
from mysimbdp.domain.notifications import Notifications
from mysimbdp.domain.patterns import compile_pattern
from mysimbdp.domain.writes import DatasetWrites, Indexes, Write, replace_problems, write_spec
from mysimbdp.domain.writespec import WriteSpec
from mysimbdp.errors import ProfileError

PositiveInt = Annotated[int, Field(gt=0)]


def _dataset_name(value: str) -> str:
    if problem := dataset_problem(value):
        raise ValueError(problem)
    return value


DatasetName = Annotated[str, AfterValidator(_dataset_name)]


class Limits(StrictModel):
    # The defaults fit big files: a file up to the daily byte quota is taken, and one over
    # big_files.threshold_bytes (512 MiB) is chunked, not rejected (docs/profile-reference.md).
    max_file_size_bytes: PositiveInt = 10 * 1024**3
    max_files_per_day: PositiveInt = 10_000
    max_bytes_per_day: PositiveInt = 10 * 1024**3
    max_line_length_bytes: PositiveInt = 1024 * 1024
    # A compressed file (gzip, bzip2, zstd): max_file_size_bytes holds its compressed size; these
    # hold what it decompresses to, checked while decompressing (a bomb stops at the limit).
    max_uncompressed_bytes: PositiveInt = 10 * 1024**3
    max_expansion_ratio: Annotated[float, Field(ge=1.0)] = 100.0


class RowRule(StrictModel):
    """A data-quality rule on one field of every row."""

    field: str
    type: FieldType | None = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    allowed: list[str] | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                compile_pattern(value)  # RE2 cannot run it (in linear time, or at all)
            except ValueError as exc:
                raise ValueError(f"rule on field {info.data.get('field', '?')!r}: {exc}") from exc
        return value


class Quality(StrictModel):
    max_bad_row_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    rules: list[RowRule] = []


class AppNetwork(StrEnum):
    """What an app may connect to from its sandbox (``docs/architecture.md``, "Sandbox").

    An app's ``network`` field is the answer for that app: its own value, else the profile's
    top-level ``network``, else ``store`` (resolved when the profile is validated)."""

    STORE = "store"  # its store and, for a stream app, the broker (the default)
    NONE = "none"  # nothing
    ANY = "any"  # anything: only for tenants the operator lists in MYSIMBDP_APP_NETWORK_ANY


_NETWORKS = frozenset(member.value for member in AppNetwork)


class BatchApp(StrictModel):
    """One clientbatchingestapp: the argv to run and the files it serves."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$")]
    command: AppCommand = [
        "{python}",
        "-m",
        "mysimbdp.apps.generic",
    ]
    file_pattern: str = "*"
    formats: Annotated[list[FileFormat], Field(min_length=1)] | None = None  # detected formats; None: any
    dataset: DatasetName | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    memory_mb: Annotated[int, Field(ge=64)] = 1024
    cpu_s: Annotated[int, Field(gt=0)] = 3600
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    network: AppNetwork = AppNetwork.STORE

    def takes(self, file_name: str, fmt: FileFormat | None) -> bool:
        """Whether this app serves a file of this name and detected format (None: unknown)."""
        if self.formats is not None and fmt not in self.formats:
            return False
        return fnmatch.fnmatch(file_name, self.file_pattern)


class BigFiles(StrictModel):
    """When a file is split into chunks ingested in parallel (micro-batches) instead of one run.

    A file is chunked when it is larger than ``threshold_bytes``, or when its expected run time
    at ``bandwidth_bytes_per_s`` exceeds ``max_run_s``. Only CSV and JSON Lines can be chunked.
    """

    threshold_bytes: PositiveInt = 512 * 1024 * 1024
    chunk_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    bandwidth_bytes_per_s: PositiveInt = 20 * 1024 * 1024  # what one app run is expected to ingest
    max_run_s: Annotated[float, Field(gt=0)] = 600.0


class StreamLimits(StrictModel):
    """What the API takes from a tenant's producers."""

    max_message_bytes: PositiveInt = 256 * 1024  # one item (document or envelope)
    max_batch_bytes: PositiveInt = 8 * 1024 * 1024  # one POST body
    max_batch_messages: PositiveInt = 10_000  # items in one POST
    messages_per_s: PositiveInt = 5_000  # sustained rate (token bucket)
    burst_messages: PositiveInt = 20_000  # bucket size


class Scaling(StrictModel):
    """When the monitor asks for more or fewer instances of a stream app."""

    window_s: Annotated[float, Field(gt=0)] = 30.0
    backlog_high: PositiveInt = 1_000  # messages waiting
    latency_p95_high_ms: Annotated[float, Field(gt=0)] = 1_000.0  # receive -> committed
    high_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5  # of the window's reports
    idle_s: Annotated[float, Field(gt=0)] = 60.0  # no backlog this long: scale down
    cooldown_s: Annotated[float, Field(ge=0)] = 30.0
    step: Annotated[int, Field(ge=1, le=16)] = 1


class StreamApp(StrictModel):
    """One clientstreamingestapp: the argv to run and the streams it consumes."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$")]
    command: AppCommand = ["{python}", "-m", "mysimbdp.apps.generic_stream"]
    streams: Annotated[list[str], Field(min_length=1)] = ["*"]  # fnmatch patterns of stream names
    dataset: DatasetName | None = None  # None: the stream's name
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    max_deliveries: Annotated[int, Field(ge=1, le=100)] = 5  # then a message is quarantined
    report_period_s: Annotated[float, Field(gt=0)] = 5.0
    min_instances: Annotated[int, Field(ge=0, le=64)] = 1
    max_instances: Annotated[int, Field(ge=1, le=64)] = 4
    memory_mb: Annotated[int, Field(ge=64)] = 512
    scaling: Scaling = Scaling()
    # Check each record's data against the profile's quality.rules (off: a stream's documents
    # often differ from the file rows the rules were written for).
    check_quality: bool = False
    network: AppNetwork = AppNetwork.STORE

    @model_validator(mode="after")
    def _instances_in_order(self) -> StreamApp:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances {self.min_instances} is above max_instances {self.max_instances}")
        return self


class Profile(StrictModel):
    """A tenant's whole service profile."""

    description: str = ""
    formats: Annotated[list[FileFormat], Field(min_length=1)] = [
        FileFormat.CSV,
        FileFormat.JSONL,
        FileFormat.JSON,
        FileFormat.PARQUET,
    ]
    encoding: Annotated[str, Field(pattern=r"^(utf-8|utf8)$")] = "utf-8"
    limits: Limits = Limits()
    required_columns: list[str] = []
    quality: Quality = Quality()
    dataset: DatasetName | None = None  # None: named after each file's stem
    key_fields: list[str] = []  # None: (file sha256, row number)
    write: Write = Write()  # every dataset's write mode, unless datasets gives its own
    indexes: Indexes = []  # every dataset's indexes (lists of fields), unless datasets gives its own
    datasets: dict[DatasetName, DatasetWrites] = {}
    batch_apps: Annotated[list[BatchApp], Field(min_length=1)] = [BatchApp(name="generic")]
    stream_limits: StreamLimits = StreamLimits()
    stream_apps: list[StreamApp] = [StreamApp(name="generic")]
    notifications: Notifications = Notifications()
    big_files: BigFiles = BigFiles()
    # files of the bundle besides the profile and the apps' entry points (the {bundle}/...
    # parts of their commands): globs relative to the profile's directory, e.g. "lib/**/*.py"
    bundle_files: BundleGlobs = []
    network: AppNetwork = AppNetwork.STORE  # the default of the apps' own `network`

    @model_validator(mode="before")
    @classmethod
    def _apps_take_the_network(cls, data: Any) -> Any:
        """Give every app without a ``network`` of its own the profile's (a bad value is
        reported once, on the top-level field)."""
        if not isinstance(data, dict) or data.get("network") not in _NETWORKS:
            return data
        data = dict(data)
        for kind in ("batch_apps", "stream_apps"):
            apps = data.get(kind, cls.model_fields[kind].default)
            if isinstance(apps, list):  # the app's own network wins
                apps = [a.model_dump(exclude_unset=True) if isinstance(a, BaseModel) else a for a in apps]
                data[kind] = [{"network": data["network"], **a} if isinstance(a, dict) else a for a in apps]
        return data

    def with_secrets(self, change: Callable[[str], str]) -> Profile:
        """This profile with every webhook secret passed through ``change`` (sealed before the
        profile is stored, opened after it is read back)."""
        hooks = [hook.model_copy(update={"secret": change(hook.secret)}) for hook in self.notifications.webhooks]
        return self.model_copy(update={"notifications": self.notifications.model_copy(update={"webhooks": hooks})})

    def apps(self) -> list[tuple[str, BatchApp | StreamApp]]:
        """Every app with its kind (``batch app`` / ``stream app``), in profile order."""
        return [("batch app", a) for a in self.batch_apps] + [("stream app", a) for a in self.stream_apps]

    def network_any_apps(self) -> list[str]:
        """The apps that ask for ``network: any`` (``batch app 'NAME'``, ``stream app 'NAME'``)."""
        return [f"{kind} {app.name!r}" for kind, app in self.apps() if app.network is AppNetwork.ANY]

    def entry_points(self) -> list[str]:
        """The bundle files the apps' commands name (``{bundle}/app.py`` -> ``app.py``)."""
        return entry_points(app.command for _, app in self.apps())

    @field_validator("batch_apps")
    @classmethod
    def _app_formats_allowed(cls, apps: list[BatchApp], info: ValidationInfo) -> list[BatchApp]:
        if "formats" not in info.data:  # invalid itself: reported on its own
            return apps
        allowed = info.data["formats"]
        for app in apps:
            if outside := [str(f) for f in app.formats or () if f not in allowed]:
                raise ValueError(
                    f"app {app.name!r}: formats {outside} are not in the profile's formats "
                    f"{[str(f) for f in allowed]}: such a file is rejected before an app is chosen; "
                    "add them to formats or remove them here"
                )
        return apps

    @model_validator(mode="after")
    def _unique_app_names(self) -> Profile:
        for kind, apps in (("batch_apps", self.batch_apps), ("stream_apps", self.stream_apps)):
            names = [app.name for app in apps]
            if len(names) != len(set(names)):
                raise ValueError(f"{kind}: names must be unique, got {names}")
        return self

    @model_validator(mode="after")
    def _stream_apps_never_replace(self) -> Profile:
        apps = [(app.name, app.dataset, app.streams) for app in self.stream_apps]
        if problems := replace_problems(self.write, self.datasets, apps):
            raise ValueError("; ".join(problems))
        return self

    def write_for(self, dataset: str) -> WriteSpec:
        """How ``dataset`` is written and indexed (its own settings, else the profile's)."""
        return write_spec(self.write, self.indexes, self.datasets.get(dataset))

    def app_for(self, file_name: str, fmt: FileFormat | None = None) -> BatchApp | None:
        """The first batch app that takes ``file_name`` in its detected format ``fmt``
        (None: unknown, so only an app without ``formats`` can take it)."""
        for app in self.batch_apps:
            if app.takes(file_name, fmt):
                return app
        return None

    def batch_app(self, name: str) -> BatchApp | None:
        """The batch app called ``name`` (a file's recorded app), None if no longer here."""
        return next((app for app in self.batch_apps if app.name == name), None)

    def dataset_for(self, app: BatchApp, file_name: str) -> str:
        return app.dataset or self.dataset or dataset_from_stem(file_name)

    def stream_app_for(self, stream: str) -> StreamApp | None:
        """The first stream app whose ``streams`` patterns match ``stream``."""
        for app in self.stream_apps:
            if any(fnmatch.fnmatch(stream, pattern) for pattern in app.streams):
                return app
        return None


DEFAULT_PROFILE = Profile(description="default profile: any CSV/JSON Lines/JSON file, generic app")


def _describe(error: ErrorDetails) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["loc"] and error["loc"][-1] == "secret":  # never echo a secret, even a bad one
        return f"{loc}: {message}"
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown field (value {error['input']!r}); check the spelling"
    return f"{loc}: {message} (got {error['input']!r})"


def parse_profile(text: str, source: str) -> Profile:
    """Parse and validate a profile's YAML ``text``; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(source, [f"not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(source, [f"{source}: {_describe(e)}" for e in exc.errors()]) from exc


def load_profile(path: Path) -> Profile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    return parse_profile(text, str(path))


def dump_profile(profile: Profile) -> str:
    return yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False)
