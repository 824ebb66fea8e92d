"""A tenant's failure notifications, as its profile declares them (``notifications:``;
``docs/notifications.md``): the events, and the webhooks that receive them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from mysimbdp.domain.model import StrictModel

__all__ = ["SEALED_PREFIX", "Notifications", "NotifyEvent", "Webhook"]


class NotifyEvent(StrEnum):
    """What a tenant's webhooks can be told (``docs/notifications.md``)."""

    FILE_REJECTED = "file_rejected"
    RUN_FAILED = "run_failed"
    QUARANTINE_RATIO_EXCEEDED = "quarantine_ratio_exceeded"
    APP_CRASH_LOOP = "app_crash_loop"
    SCALING_AT_MAX = "scaling_at_max"


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {value!r} must be an http:// or https:// URL with a host")
    return value


SEALED_PREFIX = "fernet:"  # a secret sealed by the platform (adapters/secretbox.py), as stored


class Webhook(StrictModel):
    """One receiver of a tenant's failure notifications, signed with ``secret``."""

    url: Annotated[str, AfterValidator(_webhook_url)]
    # a literal: the HMAC-SHA256 key (at most 512 characters); stored profiles hold it sealed
    # ("fernet:...", adapters/secretbox.py), which is longer
    secret: Annotated[str, Field(min_length=16, max_length=1024, repr=False)]
    events: Annotated[list[NotifyEvent], Field(min_length=1)] = list(NotifyEvent)
    quarantine_ratio_high: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05  # quarantined / total above: notify

    @field_validator("secret")
    @classmethod
    def _secret_literal(cls, value: str) -> str:
        if value.startswith("${"):
            raise ValueError("references like ${NAME} are not expanded; write the secret itself")
        if len(value) > 512 and not value.startswith(SEALED_PREFIX):
            raise ValueError(f"at most 512 characters, got {len(value)}")
        return value

    @field_validator("events")
    @classmethod
    def _events_unique(cls, value: list[NotifyEvent]) -> list[NotifyEvent]:
        if len(value) != len(set(value)):
            raise ValueError("each event may appear once")
        return value


class Notifications(StrictModel):
    webhooks: Annotated[list[Webhook], Field(max_length=8)] = []

    @model_validator(mode="after")
    def _unique_urls(self) -> Notifications:
        urls = [hook.url for hook in self.webhooks]
        if len(urls) != len(set(urls)):
            raise ValueError(f"webhooks: each url may appear once, got {urls}")
        return self
