"""The stream app's contract environment, read once and checked whole (:class:`StreamConfig`);
see :mod:`mysimbdp.sdk.stream`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mysimbdp import contract
from mysimbdp.adapters.broker import DEFAULT_ACK_WAIT_S
from mysimbdp.domain.quality import RowRuleLike, rules_of_quality_json
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec, parse_write_spec
from mysimbdp.errors import AppContractError

__all__ = ["REQUIRED", "StreamConfig"]

REQUIRED = (
    contract.TENANT,
    contract.STREAM,
    contract.DATASET,
    contract.BROKER_URL,
    contract.COREDMS_URL,
    contract.REJECTS,
)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    tenant: str
    stream: str
    dataset: str
    broker_url: str
    coredms_url: str
    rejects: Path
    group: str = "app"
    instance: str = ""
    batch_size: int = 100
    max_deliveries: int = 5
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    report_period_s: float = 5.0
    key_fields: tuple[str, ...] = ()
    quality_rules: tuple[RowRuleLike, ...] = ()  # checked on each record's data before the transform
    write: WriteSpec = APPEND  # the dataset's write mode (append or merge) and indexes (WRITE)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamConfig:
        problems = [f"{name} is not set" for name in REQUIRED if not env.get(name)]
        numbers: dict[str, int] = {}
        for name, default in ((contract.BATCH_SIZE, 100), (contract.MAX_DELIVERIES, 5)):
            try:
                numbers[name] = int(env.get(name) or default)
                if numbers[name] < 1:
                    raise ValueError(numbers[name])
            except ValueError:
                problems.append(f"{name}={env.get(name)!r} is not a positive integer")
        seconds: dict[str, float] = {}
        for name, fallback in ((contract.ACK_WAIT_S, DEFAULT_ACK_WAIT_S), (contract.REPORT_PERIOD_S, 5.0)):
            try:
                seconds[name] = float(env.get(name) or fallback)
                if seconds[name] <= 0:
                    raise ValueError(seconds[name])
            except ValueError:
                problems.append(f"{name}={env.get(name)!r} is not a positive number of seconds")
        rules: tuple[RowRuleLike, ...] = ()
        if raw_quality := env.get(contract.QUALITY):
            try:
                rules = rules_of_quality_json(raw_quality)
            except ValueError as exc:
                problems.append(f"{contract.QUALITY} is not a valid quality section: {exc}")
        write = APPEND
        try:
            write = parse_write_spec(env.get(contract.WRITE, ""))
        except ValueError as exc:
            problems.append(f"{contract.WRITE} is not a valid write mode: {exc}")
        if write.mode is WriteMode.REPLACE:
            problems.append(f"{contract.WRITE}: mode replace is for files only, not for a stream")
        if problems:
            raise AppContractError("stream app contract environment: " + "; ".join(problems))
        return cls(
            tenant=env[contract.TENANT],
            stream=env[contract.STREAM],
            dataset=env[contract.DATASET],
            broker_url=env[contract.BROKER_URL],
            coredms_url=env[contract.COREDMS_URL],
            rejects=Path(env[contract.REJECTS]),
            group=env.get(contract.GROUP) or "app",
            instance=env.get(contract.INSTANCE) or str(os.getpid()),
            batch_size=numbers[contract.BATCH_SIZE],
            max_deliveries=numbers[contract.MAX_DELIVERIES],
            ack_wait_s=seconds[contract.ACK_WAIT_S],
            report_period_s=seconds[contract.REPORT_PERIOD_S],
            key_fields=tuple(n.strip() for n in env.get(contract.KEY_FIELDS, "").split(",") if n.strip()),
            quality_rules=rules,
            write=write,
        )
