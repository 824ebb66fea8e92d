"""The app contract's environment, parsed once into a typed value (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mysimbdp import contract
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.naming import dataset_problem
from mysimbdp.domain.quality import RowRuleLike, rules_of_quality_json
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec, parse_write_spec
from mysimbdp.errors import AppContractError, FileUnreadable
from mysimbdp.formats.readers import Span, read_header

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
    quality_rules: tuple[RowRuleLike, ...] = ()  # the profile's row rules
    max_line_bytes: int | None = None
    progress: Path | None = None
    line_map: Path | None = None  # a replay: its input's lines -> the original file's (LINE_MAP)
    span: Span | None = None  # a chunk of a big file: read only these bytes
    write: WriteSpec = APPEND  # the dataset's write mode and indexes (WRITE)

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
        quality_rules: tuple[RowRuleLike, ...] = ()
        if raw_quality := env.get(contract.QUALITY):
            try:
                quality_rules = rules_of_quality_json(raw_quality)
            except ValueError as exc:
                problems.append(f"{contract.QUALITY} is not a valid quality section: {exc}")
        max_line: int | None = None
        if raw_max := env.get(contract.MAX_LINE_BYTES):
            try:
                max_line = int(raw_max)
                if max_line <= 0:
                    raise ValueError(raw_max)
            except ValueError:
                problems.append(f"{contract.MAX_LINE_BYTES}={raw_max!r} is not a positive integer")
        span = _span(env, fmt, problems)
        write = APPEND
        try:
            write = parse_write_spec(env.get(contract.WRITE, ""))
        except ValueError as exc:
            problems.append(f"{contract.WRITE} is not a valid write mode: {exc}")
        if write.mode is WriteMode.REPLACE and not env.get(contract.FILE_ID):
            problems.append(f"{contract.WRITE}: mode replace needs {contract.FILE_ID} (the file's generation)")
        if problems:
            raise AppContractError("app contract environment: " + "; ".join(problems))
        keys = tuple(name.strip() for name in env.get(contract.KEY_FIELDS, "").split(",") if name.strip())
        progress = env.get(contract.PROGRESS)
        line_map = env.get(contract.LINE_MAP)
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
            quality_rules=quality_rules,
            max_line_bytes=max_line,
            progress=Path(progress) if progress else None,
            line_map=Path(line_map) if line_map else None,
            span=span,
            write=write,
        )


def _span(env: Mapping[str, str], fmt: FileFormat, problems: list[str]) -> Span | None:
    """The chunk to read (``MYSIMBDP_INPUT_START/END/FIRST_LINE``), or None for the whole input."""
    names = (contract.INPUT_START, contract.INPUT_END, contract.INPUT_FIRST_LINE)
    raw = [env.get(name, "") for name in names]
    if not any(raw):
        return None
    try:
        start, end, first_line = (int(value) for value in raw)
        if not 0 <= start <= end or first_line < 1:
            raise ValueError
    except ValueError:
        given = ", ".join(f"{name}={value!r}" for name, value in zip(names, raw, strict=True))
        problems.append(f"a chunk needs 0 <= START <= END and FIRST_LINE >= 1, all whole numbers; got {given}")
        return None
    if fmt is FileFormat.JSON:
        problems.append(f"{contract.INPUT_START}: a JSON array cannot be read in chunks")
        return None
    header: tuple[str, ...] = ()
    if fmt is FileFormat.CSV and start > 0:
        try:
            header = read_header(Path(env[contract.INPUT]), start)
        except (OSError, KeyError, FileUnreadable) as exc:
            problems.append(f"cannot read the CSV header of {env.get(contract.INPUT)!r}: {exc}")
    return Span(start, end, first_line, header)
