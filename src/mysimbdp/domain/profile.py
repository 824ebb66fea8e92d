"""Tenant service profiles: YAML, validated, every error naming file, field and value.

A profile says what a tenant may send (formats, sizes, quotas, columns, row rules), which
apps ingest it (argv, file pattern, resources) and where it lands (dataset, key fields).
See ``docs/profile-reference.md`` for every field.
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from mysimbdp.domain.naming import dataset_from_stem, dataset_problem
from mysimbdp.errors import ProfileError


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    JSON = "json"  # one JSON array of objects


EXTENSIONS: dict[str, FileFormat] = {
    ".csv": FileFormat.CSV,
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".json": FileFormat.JSON,
}


class FieldType(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"  # ISO 8601 date
    DATETIME = "datetime"  # ISO 8601 date-time


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]


def _dataset_name(value: str) -> str:
    if problem := dataset_problem(value):
        raise ValueError(problem)
    return value


DatasetName = Annotated[str, AfterValidator(_dataset_name)]


class Limits(_Model):
    max_file_size_bytes: PositiveInt = 100 * 1024 * 1024
    max_files_per_day: PositiveInt = 10_000
    max_bytes_per_day: PositiveInt = 10 * 1024**3
    max_line_length_bytes: PositiveInt = 1024 * 1024


class RowRule(_Model):
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
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} does not compile: {exc}") from exc
        return value


class Quality(_Model):
    max_bad_row_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    rules: list[RowRule] = []


class BatchApp(_Model):
    """One clientbatchingestapp: the argv to run and the files it serves."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$")]
    command: Annotated[list[str], Field(min_length=1)] = [
        "{python}",
        "-m",
        "mysimbdp.apps.generic",
    ]
    file_pattern: str = "*"
    dataset: DatasetName | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    memory_mb: Annotated[int, Field(ge=64)] = 1024
    cpu_s: Annotated[int, Field(gt=0)] = 3600
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2


class Profile(_Model):
    """A tenant's whole service profile."""

    description: str = ""
    formats: Annotated[list[FileFormat], Field(min_length=1)] = [
        FileFormat.CSV,
        FileFormat.JSONL,
        FileFormat.JSON,
    ]
    encoding: Annotated[str, Field(pattern=r"^(utf-8|utf8)$")] = "utf-8"
    limits: Limits = Limits()
    required_columns: list[str] = []
    quality: Quality = Quality()
    dataset: DatasetName | None = None  # None: named after each file's stem
    key_fields: list[str] = []  # None: (file sha256, row number)
    batch_apps: Annotated[list[BatchApp], Field(min_length=1)] = [BatchApp(name="generic")]

    @model_validator(mode="after")
    def _unique_app_names(self) -> Profile:
        names = [app.name for app in self.batch_apps]
        if len(names) != len(set(names)):
            raise ValueError(f"batch_apps: names must be unique, got {names}")
        return self

    def app_for(self, file_name: str) -> BatchApp | None:
        """The first batch app whose ``file_pattern`` matches ``file_name``."""
        for app in self.batch_apps:
            if fnmatch.fnmatch(file_name, app.file_pattern):
                return app
        return None

    def dataset_for(self, app: BatchApp, file_name: str) -> str:
        return app.dataset or self.dataset or dataset_from_stem(file_name)


DEFAULT_PROFILE = Profile(description="default profile: any CSV/JSON Lines/JSON file, generic app")


def _describe(error: ErrorDetails) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
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
