"""``mysimbdp up|worker|demo``: the long-running services, and the demo on top of them."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import EXIT_FAILED, CliState, with_platform

if TYPE_CHECKING:
    import asyncio

    from mysimbdp.runtime.platform import Platform


def _run_until_signal(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)`` until SIGINT or SIGTERM sets ``stop``."""
    import asyncio
    import signal

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(main_loop())


@click.command()
@click.option("--host", default=None, help="Address the API listens on.  [default: $MYSIMBDP_API_HOST, else 127.0.0.1]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="The API's port (0: any free one).  [default: $MYSIMBDP_API_PORT, else 8731]",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve https with this PEM certificate (chain).  [default: $MYSIMBDP_API_TLS_CERT; none: http]",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The certificate's PEM private key (with --tls-cert).  [default: $MYSIMBDP_API_TLS_KEY]",
)
@click.pass_context
def up(ctx: click.Context, host: str | None, port: int | None, tls_cert: str | None, tls_key: str | None) -> None:
    """Run the platform's services until Ctrl-C or SIGTERM, then drain.

    The REST API (tenants' files, messages, documents and history under /v1/, its OpenAPI
    docs at /docs) and the dashboard (/, sign in with an API key) on --host and --port,
    over https with --tls-cert and --tls-key (both, or neither); it prints their URLs.
    The options win over MYSIMBDP_API_HOST, MYSIMBDP_API_PORT, MYSIMBDP_API_TLS_CERT and
    MYSIMBDP_API_TLS_KEY.

    The databroker (an embedded NATS JetStream server under HOME/broker unless
    MYSIMBDP_BROKER_URL names one), fetchdata, the batch ingest manager, chunk workers for
    big files (MYSIMBDP_WORKERS slots, default the CPU count) and the stream ingest manager.
    Each inbox file's scan runs in a limited process: over MYSIMBDP_SCAN_TIMEOUT_S (default
    300) or MYSIMBDP_SCAN_MEMORY_BYTES (default 1 GiB) the file is rejected. On stop,
    running scans are killed (their files stay in the inbox), running batch apps get up to
    30 s to finish (the rest are requeued) and stream app instances finish and ack their batch."""
    if isinstance(ctx.obj, CliState):
        if (tls_cert is None) != (tls_key is None):
            raise click.UsageError("give both --tls-cert and --tls-key, or neither (plain http)")
        ctx.obj.override(api_host=host, api_port=port, api_tls_cert=tls_cert, api_tls_key=tls_key)
    _serve()


@with_platform
def _serve(platform: Platform) -> None:
    from mysimbdp.managers.apiserver import bind_api  # the servers' imports: only when serving
    from mysimbdp.runtime.up import api_urls, check_tls, run_services

    status = platform.require_sandbox()
    check_tls(platform.settings)
    sock = bind_api(platform.settings)
    api, dashboard = api_urls(platform.settings, sock)
    click.echo(f"mysimbdp up: home {platform.settings.home}; {status.summary()}", err=True)
    click.echo(f"mysimbdp up: API {api} (docs {dashboard}docs), dashboard {dashboard}; Ctrl-C to stop", err=True)
    _run_until_signal(lambda stop: run_services(platform, stop, api_socket=sock))


@click.group(invoke_without_command=True)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks to run at once.  [default: the CPU count]",
)
@click.option(
    "--api",
    "api_url",
    envvar="MYSIMBDP_API_URL",
    show_envvar=True,
    default=None,
    help="Run chunks through the platform API at this URL (a machine without the platform home), "
    "with the worker token in MYSIMBDP_WORKER_TOKEN.",
)
@click.option(
    "--ca-cert",
    envvar=["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"],
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --api over https: the CA certificate to trust.  [default: the system's]",
)
@click.option("--token", envvar="MYSIMBDP_WORKER_TOKEN", hidden=True, default=None)  # env only: never in argv
@click.pass_context
def worker(ctx: click.Context, slots: int | None, api_url: str | None, ca_cert: str | None, token: str | None) -> None:
    """Run big files' chunks until Ctrl-C or SIGTERM (`worker token ...`: the tokens of remote workers).

    Beside the platform (a shared disk): start one per machine beside `mysimbdp up` (same
    --home, or the same MYSIMBDP_META_URL, MYSIMBDP_COREDMS_URL and shared home directory).
    It takes chunk tasks from the broker: MYSIMBDP_BROKER_URL, else the embedded one of the
    running platform (HOME/broker/url).

    Without a shared disk: --api URL (or MYSIMBDP_API_URL) and MYSIMBDP_WORKER_TOKEN (a token
    of `mysimbdp worker token create`), with a home of its own. It claims chunks through the
    API, fetches each chunk's bytes (HTTP ranges of the staged file) and the tenant's bundle
    from the API, checks each by sha256, caches bundles per version under HOME/worker/, runs
    the app in this machine's sandbox with the tenant's own store URL (coredms must be
    reachable from here: PostgreSQL), and records progress and the run's end through the API.

    A worker stopped or killed mid-chunk, or cut off from the platform, loses nothing: its
    chunk's lease expires and the chunk runs again, its rows stored once."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    if api_url and not token:
        raise click.UsageError("--api needs the worker token in MYSIMBDP_WORKER_TOKEN (`mysimbdp worker token create`)")
    state = ctx.obj
    if not isinstance(state, CliState):
        raise click.UsageError("`worker` runs under `mysimbdp`")
    platform = state.get_platform(ctx)
    count = slots or os.cpu_count() or 1
    status = platform.require_sandbox()
    if api_url and token:
        from mysimbdp.managers.remoteworker import serve_remote_worker

        platform.settings.home.mkdir(parents=True, exist_ok=True)
        click.echo(
            f"mysimbdp worker: API {api_url}, home {platform.settings.home}, {count} slots; {status.summary()}; "
            "Ctrl-C to stop",
            err=True,
        )
        _run_until_signal(
            lambda stop: serve_remote_worker(platform, stop, api_url=api_url, token=token, ca_cert=ca_cert, slots=count)
        )
        return
    from mysimbdp.managers.chunkworker import serve_worker

    platform.start()
    click.echo(
        f"mysimbdp worker: home {platform.settings.home}, {count} slots; {status.summary()}; Ctrl-C to stop", err=True
    )
    _run_until_signal(lambda stop: serve_worker(platform, stop, slots=count))


@click.command()
@click.option(
    "--examples",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("examples/tenants"),
    show_default=True,
    help="Directory of example tenants (each with profile.yaml and data/).",
)
@click.option("--fresh/--keep", default=True, show_default=True, help="Start from an empty home.")
@with_platform
def demo(platform: Platform, examples: Path, fresh: bool) -> None:
    """The main job on the embedded default: register the example tenants, ingest their
    sample files through fetchdata and the batch manager (one of them sent over HTTP, POST
    /v1/files), post their stream samples to the
    REST API, then pause each stream app while its devices re-send everything 40 times and
    start it again (the monitor scales the instances up to drain the backlog and back down);
    print a summary of both."""
    import asyncio

    from mysimbdp.cli import render
    from mysimbdp.domain.states import FileStatus
    from mysimbdp.runtime import demo as demo_service  # the servers' imports: only when serving

    status = platform.require_sandbox()
    click.echo(f"demo: {status.summary()}")
    if fresh:
        platform.close()
        demo_service.fresh_home(platform.settings.home)
        platform.start()
    result = asyncio.run(demo_service.run_demo(platform, examples))
    if result.uploaded is not None:
        up = result.uploaded
        click.echo(
            f"demo: sent {up.name} over HTTP (POST /v1/files, tenant {up.tenant}'s key): "
            f"{up.status_code} file {up.file_id} {up.answered}, then {up.final_status}"
        )
    render.demo_summary(result.batch)
    render.demo_stream_summary(result.stream)
    if any(f.status is FileStatus.FAILED for s in result.batch for f in s.files):
        sys.exit(EXIT_FAILED)
