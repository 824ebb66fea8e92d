"""The profile's write modes and indexes: ``write``, ``indexes`` and ``datasets`` (validated).

``write`` and ``indexes`` at the top level are the default of every dataset of the tenant;
``datasets: {NAME: {write: ..., indexes: ...}}`` gives one dataset its own (each part given
replaces the default's). The batch and stream apps of a tenant get the same
:class:`~mysimbdp.domain.writespec.WriteSpec` for a dataset. See ``docs/profile-reference.md``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from mysimbdp.domain.model import StrictModel
from mysimbdp.domain.writespec import WriteMode, WriteSpec, field_path_problem

__all__ = ["DatasetWrites", "FieldPath", "Index", "Indexes", "Write", "replace_problems", "write_spec"]

MAX_INDEXES = 16
MAX_INDEX_FIELDS = 8


def _field_path(value: str) -> str:
    if problem := field_path_problem(value):
        raise ValueError(problem)
    return value


FieldPath = Annotated[str, AfterValidator(_field_path)]


def _unique_fields(value: list[str]) -> list[str]:
    if len(set(value)) < len(value):
        raise ValueError(f"index {value}: a field is named twice")
    return value


Index = Annotated[list[FieldPath], Field(min_length=1, max_length=MAX_INDEX_FIELDS), AfterValidator(_unique_fields)]
Indexes = Annotated[list[Index], Field(max_length=MAX_INDEXES)]


class Write(StrictModel):
    """How records are written into a dataset (``docs/profile-reference.md``, "Write modes")."""

    mode: WriteMode = WriteMode.APPEND
    order_by: FieldPath | None = None  # merge only: the event time, sequence or version field

    @model_validator(mode="after")
    def _order_by_with_merge(self) -> Write:
        if self.order_by is not None and self.mode is not WriteMode.MERGE:
            raise ValueError(
                f"order_by {self.order_by!r} is only for mode merge (got mode {self.mode.value}): "
                "append never changes a stored record and replace replaces them all"
            )
        return self


class DatasetWrites(StrictModel):
    """One dataset's own write mode and indexes (each None: the profile's top-level one)."""

    write: Write | None = None
    indexes: Indexes | None = None


def write_spec(default: Write, indexes: list[list[str]], own: DatasetWrites | None) -> WriteSpec:
    """The spec of a dataset with settings ``own`` (None: none) under the profile's defaults."""
    write = own.write if own is not None and own.write is not None else default
    chosen = own.indexes if own is not None and own.indexes is not None else indexes
    return WriteSpec(write.mode, write.order_by, tuple(tuple(index) for index in chosen))


def replace_problems(
    default: Write,
    datasets: Mapping[str, DatasetWrites],
    stream_apps: Iterable[tuple[str, str | None, list[str]]],
) -> list[str]:
    """Why a stream app would write a dataset in mode replace (each app: name, its dataset or
    None for the stream's name, its stream patterns). A stream has no end at which a new
    content could replace the old one, so replace is for files only."""

    def mode_of(dataset: str) -> WriteMode:
        own = datasets.get(dataset)
        return (own.write if own is not None and own.write is not None else default).mode

    problems = []
    remedy = "use append or merge for it, or give the stream app another dataset"
    for name, dataset, patterns in stream_apps:
        if dataset is not None:
            targets = [dataset] if mode_of(dataset) is WriteMode.REPLACE else []
        else:  # the stream's name: any stream its patterns match
            targets = [d for d in datasets if mode_of(d) is WriteMode.REPLACE and _matches(d, patterns)]
            if default.mode is WriteMode.REPLACE:
                targets = [f"(every stream matching {patterns} not listed in datasets)", *targets]
        problems += [
            f"stream app {name!r}: dataset {target if target.startswith('(') else repr(target)}: "
            f"write.mode 'replace' is for files only (a stream has no end at which to replace the dataset); {remedy}"
            for target in targets
        ]
    return problems


def _matches(dataset: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(dataset, pattern) for pattern in patterns)
