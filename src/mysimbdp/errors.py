"""The one error hierarchy of mysimbdp.

Every message names the tenant, the file or message, the rule and the value where they
are known, and says what to do. Raise with ``raise ... from exc`` to keep the cause.
"""

from __future__ import annotations


class MysimbdpError(Exception):
    """Root of every error the platform raises on purpose."""


class ConfigError(MysimbdpError):
    """Settings or command-line values are wrong (bad URL, unknown option)."""


class ProfileError(MysimbdpError):
    """A tenant service profile is invalid; ``problems`` lists every one as 'file: field: message'."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid profile {path}:\n{lines}")


class TenantError(MysimbdpError):
    """A tenant does not exist, already exists, or its id is not acceptable."""


class BundleRefused(TenantError):
    """A tenant's bundle (``tenant add/update --profile``) breaks a bundle rule; nothing was
    copied. ``problems`` lists every one as 'file: rule bundle.<name>: value; what to do'."""

    def __init__(self, who: str, problems: list[str]) -> None:
        self.who = who
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{who}: bundle refused, nothing copied:\n{lines}")


class StoreError(MysimbdpError):
    """The meta store or coredms failed."""


class StoreUnavailable(StoreError):
    """A store cannot be reached right now; transient: retry with backoff, never mark data bad."""


class KeyFieldMissing(StoreError):
    """A document lacks one of the profile's key fields (the SDK quarantines the row)."""


class DocumentInvalid(StoreError):
    """The store refused a document's content (e.g. PostgreSQL jsonb and a NUL character)."""


class FileRejected(MysimbdpError):
    """A file broke one or more profile rules; ``reasons`` holds each violation."""

    def __init__(self, tenant: str, name: str, reasons: list[str]) -> None:
        self.tenant = tenant
        self.name = name
        self.reasons = reasons
        super().__init__(f"tenant {tenant!r}: file {name!r} rejected: " + "; ".join(reasons))


class FileStillWritten(MysimbdpError):
    """A claimed inbox file is still being written (a writer holds it open, or it changed while
    it was scanned): it went back to the inbox unrecorded, to be taken once it has settled."""

    rule = "still_written"

    def __init__(self, tenant: str, name: str, why: str) -> None:
        self.tenant, self.name = tenant, name
        super().__init__(f"tenant {tenant!r}: file {name!r}: rule {self.rule}: {why}; taken again once it has settled")


class AppContractError(MysimbdpError):
    """A tenant app broke the contract (bad result file, bad environment)."""


class FileUnreadable(MysimbdpError):
    """A whole file cannot be parsed (unterminated quote, not UTF-8, JSON not an array)."""


class BrokerError(MysimbdpError):
    """The message broker refused an operation (a bad name, a missing stream)."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached or did not confirm; transient: retry, nothing was accepted."""


class SandboxUnavailable(MysimbdpError):
    """Tenant apps cannot be confined here (no Landlock, a kernel refusal) and the operator has
    not turned the sandbox off on purpose (``MYSIMBDP_SANDBOX=off``): no app is started."""


class RunCancelled(MysimbdpError):
    """A blocking run of platform work (``runner.run_sync``, e.g. a file's scan) was cancelled
    because the platform is stopping; its process group was killed and its input is untouched."""


class UploadRefused(MysimbdpError):
    """An upload (``POST /v1/files``, tus ``/v1/uploads/``) broke a rule before its file was
    fetched: its name, the size limit or a daily quota while reading, a body that ended early or
    stalled, a tus offset or checksum, an unknown or expired upload. Nothing of it was kept.
    ``rule`` is the rule's id; ``fields`` (e.g. ``limit_bytes``) go into the API's answer."""

    def __init__(self, rule: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.rule, self.fields = rule, fields


class ApiError(MysimbdpError):
    """The remote CLI (``--api URL``) could not do what it was asked through the platform's
    HTTP API: the URL is unreachable, its TLS certificate is not trusted, the tenant's key was
    refused, or the API answered an error. ``status`` is the HTTP status (0: no answer);
    ``body`` the answer's JSON (its ``error`` names the tenant, the file, the rule and the value)."""

    def __init__(self, message: str, status: int = 0, body: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body or {}


class FilterError(MysimbdpError):
    """A read query of the documents API is not acceptable: its filter (malformed JSON, an
    unknown operator, a type mismatch, nesting or an ``$in`` over a limit), its ``fields``,
    ``sort`` or numeric parameters, or its cursor (forged, altered, or issued for another
    tenant, dataset, sort or filter). ``rule`` is the rule's id; ``fields`` (e.g. ``limit``,
    ``position``) go into the API's answer (400)."""

    def __init__(self, rule: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.rule, self.fields = rule, fields


class ChunkFetchRefused(MysimbdpError):
    """A remote chunk worker (``mysimbdp worker --api URL``) refused what it fetched from the
    platform API for a chunk: a byte range or a tenant bundle whose size or sha256 is not the one
    the chunk's task announced. The chunk is given back (it runs again), nothing is recorded."""
