"""The app contract's environment, parsed once into a typed value (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from mysimbdp import contract
from mysimbdp.domain.naming import dataset_problem
from mysimbdp.domain.profile import FileFormat, Quality
from mysimbdp.errors import AppContractError

REQUIRED = (
    contract.INPUT,
    contract.INPUT_FORMAT,
    contract.INPUT_SHA256,
    contract.DATASET,
    contract.COREDMS_URL,
    contract.RESULT,
    contract.REJECTS,
)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """What one batch run is about: the input, where it goes, where to report."""

    input: Path
    input_format: FileFormat
    sha256: str
    dataset: str
    coredms_url: str
    result: Path
    rejects: Path
    tenant: str = ""
    run_id: str = ""
    file_id: str = ""
    input_name: str = ""
    key_fields: tuple[str, ...] = ()
    quality: Quality = field(default_factory=Quality)
    max_line_bytes: int | None = None
    progress: Path | None = None

    @property
    def source(self) -> str:
        """What the store records as each row's origin: the file id, else the run id."""
        return self.file_id or self.run_id or self.sha256

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BatchConfig:
        """Parse the ``MYSIMBDP_*`` variables; :class:`AppContractError` lists every problem."""
        problems = [f"{name} is not set" for name in REQUIRED if not env.get(name)]
        fmt = FileFormat.CSV
        if raw_format := env.get(contract.INPUT_FORMAT):
            try:
                fmt = FileFormat(raw_format)
            except ValueError:
                choices = ", ".join(f.value for f in FileFormat)
                problems.append(f"{contract.INPUT_FORMAT}={raw_format!r} is not one of {choices}")
        if (dataset := env.get(contract.DATASET)) and (problem := dataset_problem(dataset)):
            problems.append(f"{contract.DATASET}: {problem}")
        quality = Quality()
        if raw_quality := env.get(contract.QUALITY):
            try:
                quality = Quality.model_validate_json(raw_quality)
            except ValidationError as exc:
                problems.append(f"{contract.QUALITY} is not a valid quality section: {exc}")
        max_line: int | None = None
        if raw_max := env.get(contract.MAX_LINE_BYTES):
            try:
                max_line = int(raw_max)
                if max_line <= 0:
                    raise ValueError(raw_max)
            except ValueError:
                problems.append(f"{contract.MAX_LINE_BYTES}={raw_max!r} is not a positive integer")
        if problems:
            raise AppContractError("app contract environment: " + "; ".join(problems))
        keys = tuple(name.strip() for name in env.get(contract.KEY_FIELDS, "").split(",") if name.strip())
        progress = env.get(contract.PROGRESS)
        return cls(
            input=Path(env[contract.INPUT]),
            input_format=fmt,
            sha256=env[contract.INPUT_SHA256],
            dataset=env[contract.DATASET],
            coredms_url=env[contract.COREDMS_URL],
            result=Path(env[contract.RESULT]),
            rejects=Path(env[contract.REJECTS]),
            tenant=env.get(contract.TENANT, ""),
            run_id=env.get(contract.RUN_ID, ""),
            file_id=env.get(contract.FILE_ID, ""),
            input_name=env.get(contract.INPUT_NAME) or Path(env[contract.INPUT]).name,
            key_fields=keys,
            quality=quality,
            max_line_bytes=max_line,
            progress=Path(progress) if progress else None,
        )
