"""The base of the profile's models: unknown fields are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A profile part: a misspelt field is refused (not silently ignored), and a parsed
    profile cannot be changed in place (copies are made with ``model_copy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
