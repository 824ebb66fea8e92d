"""Uploads benchmark: a 1 GB CSV sent over loopback, through the platform and through a bare endpoint.

In one run, on one generated CSV (bench/bigfile.py's rows, default 1 GB):

  (a) raw baseline: a bare ASGI app under uvicorn (the same server `up` runs, default http
      implementation, no access log) that writes ``request.stream()``'s chunks to a file and
      answers 201; started by this script (``--serve-baseline``) in its own process;
  (b) ``POST /v1/files`` to a running `mysimbdp up` (a fresh home, tenant ``bench``), the raw
      body streamed from disk by httpx (1 MiB reads), the same client code as (a). Timed from the
      request's start to its answer: the HTTP transfer (the Receiver's sha256, the writes into
      the inbox's partial file, its fsync) **and** the staging check (fetch_claimed: the rename to
      a claim, the scan and checks of the file, its record) — the ingest that follows is not
      timed. The time to the last byte sent is printed too. Peak RSS of `up` (every process of
      its tree, from /proc every 50 ms) while the upload runs;
  (b') the same with ``Prefer: respond-async``, in a fresh home: timed to the 202 (the body on
      disk, fsynced and kept under its file id; the checks after it), then to the file's record
      staged (``GET /v1/files/{id}`` polled every 50 ms, and the time `up` logged it);
  (c) a resumable upload through tus: `mysimbdp ingest FILE --tenant bench --api URL` (the
      remote CLI: tuspy, its default 8 MiB PATCHes), once uninterrupted and once killed
      (SIGKILL) twice midway and run again until it finishes; each into a fresh home so no run
      is a duplicate and no earlier file's ingest runs meanwhile. The interrupted total is the
      sum of the three CLI runs' wall times.

Targets (issue 14): (b') to its 202 ≥ 0.8 x (a) (both: the bytes durable on disk; (b) also
waits for the checks); `up` under 150 MB; interrupted ≤ 1.3 x uninterrupted.
Writes bench/out/uploads.json. Run: `make bench-uploads` or `.venv/bin/python bench/uploads.py
[--size 1G] [--work-dir DIR]`; needs ~4 x the size free (the file, the baseline's copy, a
home at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import batch
import bigfile
import httpx
from _platform import MYSIMBDP, TENANT, BenchPlatform, TreeSampler, free_port, human, machine, parse_size

ROOT = batch.ROOT
READ_BYTES = 1024 * 1024  # the client's reads from disk
RSS_TARGET_BYTES = 150 * 1000 * 1000
POST_TARGET = 0.8
RESUME_TARGET = 1.3
INTERRUPTS = 2
PROFILE = "limits: {max_file_size_bytes: 100000000000, max_bytes_per_day: 1000000000000}\n"


# -- the raw baseline -----------------------------------------------------------------------
def serve_baseline(port: int, out_dir: Path) -> None:
    """A bare ASGI app: each POST's body, chunk by chunk as it arrives, into a new file in ``out_dir``."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = out_dir / f"upload-{time.monotonic_ns()}"
        size = 0
        with open(path, "wb") as fh:
            while True:
                message = await receive()
                body = message.get("body", b"")
                if body:
                    fh.write(body)
                    size += len(body)
                if not message.get("more_body", False):
                    break
            fh.flush()
            os.fsync(fh.fileno())
        answer = json.dumps({"size_bytes": size}).encode()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")


def _wait_port(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the baseline server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the baseline server did not answer within 30 s")


# -- the client -----------------------------------------------------------------------------
def post(url: str, path: Path, headers: dict[str, str]) -> dict[str, Any]:
    """POST ``path``'s bytes, streamed from disk; the seconds to the last byte sent and to the answer."""
    sent_at: list[float] = []

    def body() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while block := fh.read(READ_BYTES):
                yield block
        sent_at.append(time.perf_counter())

    size = path.stat().st_size
    t0 = time.perf_counter()
    with httpx.Client(timeout=httpx.Timeout(600.0)) as client:
        resp = client.post(url, content=body(), headers={**headers, "Content-Length": str(size)})
    seconds = time.perf_counter() - t0
    if resp.status_code not in (200, 201, 202):
        raise SystemExit(f"POST {url}: {resp.status_code} {resp.text[:2000]}")
    return {
        "seconds": round(seconds, 3),
        "sent_s": round(sent_at[0] - t0, 3) if sent_at else None,
        "mb_per_s": round(size / seconds / 1e6, 1),
        "status_code": resp.status_code,
        "answer": resp.json(),
    }


def run_baseline(work: Path, path: Path) -> dict[str, Any]:
    out_dir = work / "baseline"
    out_dir.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-baseline", str(port), "--work-dir", str(out_dir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_port(url, server)
        with TreeSampler() as sampler:
            sampler.watch("baseline", server.pid)
            result = post(url, path, {})
        result["peak_rss_bytes"] = sampler.largest()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


# -- the platform ---------------------------------------------------------------------------
def _key(plat: BenchPlatform) -> str:
    return str(json.loads(plat._cli("tenant", "rotate-key", TENANT, "--grace", "0", "--json"))["api_key"])


def _api(plat: BenchPlatform) -> str:
    return f"http://127.0.0.1:{plat.env['MYSIMBDP_API_PORT']}"


def run_post(work: Path, path: Path, *, respond_async: bool = False) -> dict[str, Any]:
    """``POST /v1/files`` into a fresh home; ``respond_async``: with ``Prefer: respond-async``
    (timed to the 202), then until the file's record is staged (GET Location, and `up`'s log)."""
    with BenchPlatform(work, "post-async" if respond_async else "post", PROFILE) as plat:
        assert plat.up is not None
        key = _key(plat)
        headers = {"Authorization": f"Bearer {key}"}
        with TreeSampler() as sampler:
            sampler.watch("up", plat.up.pid)
            began = time.time()
            try:
                result = post(
                    f"{_api(plat)}/v1/files?name={path.name}",
                    path,
                    {**headers, "Prefer": "respond-async"} if respond_async else headers,
                )
                if respond_async:
                    result["checked_s"] = _until_checked(_api(plat), result["answer"]["file_id"], headers)
            except SystemExit as exc:
                raise SystemExit(f"{exc}\nup's log ends: {plat.log_tail(plat.up)}") from exc
        result["up_peak_rss_bytes"] = sum_peak(sampler)
        result["up_peak_rss_at_once_bytes"] = sampler.peak_total_bytes
        result["up_rss_by_role"] = sampler.by_role()
        log = plat.log_tail(plat.up, 10**6)
        received = _logged_at(log, "file_uploaded")
        if received is not None:  # the body on disk (sha256, writes, fsync) vs the staging check after it
            result["received_s"] = round(received - began, 3)
            result["staging_check_s"] = round(result["seconds"] - result["received_s"], 3)
        staged = _logged_at(log, "file_staged")
        if respond_async and staged is not None:  # from the request's start to the record staged
            result["staged_s"] = round(staged - began, 3)
            result["staging_check_s"] = round(staged - received, 3) if received is not None else None
    return result


def _until_checked(api: str, file_id: str, headers: dict[str, str]) -> float:
    """Poll ``GET /v1/files/{file_id}`` (``checking`` until its checks decide; before 2026-12-08:
    404, then ``received``) until it is past both; the seconds it took after the 202."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        while time.perf_counter() - t0 < 600:
            answer = client.get(f"/v1/files/{file_id}")
            if answer.status_code == 200 and answer.json()["file"]["status"] not in ("checking", "received"):
                status = answer.json()["file"]["status"]
                if status in ("rejected", "duplicate", "failed"):
                    raise SystemExit(f"file {file_id}: {status}: {answer.json()['file']['reasons']}")
                return round(time.perf_counter() - t0, 3)
            time.sleep(0.05)
    raise SystemExit(f"file {file_id}: not checked within 600 s")


def _logged_at(log: str, event: str) -> float | None:
    """When `up` logged ``event`` (its JSON log's timestamp, epoch seconds)."""
    from datetime import datetime

    for line in log.splitlines():
        if f'"event": "{event}"' in line:
            return datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


def sum_peak(sampler: TreeSampler) -> int:
    """The peak of `up`'s tree as a whole: the sum of its processes' peaks (an upper bound)."""
    return sum(seen.peak_rss_bytes for seen in sampler.seen.values())


def _cli_env(plat: BenchPlatform, work: Path, key: str) -> dict[str, str]:
    cache = work / "cli-cache"
    cache.mkdir(exist_ok=True)
    return {**plat.env, "MYSIMBDP_API_KEY": key, "XDG_CACHE_HOME": str(cache)}


def _ingest(path: Path, api: str, env: dict[str, str], kill_after_s: float | None) -> tuple[float, bool]:
    """One `mysimbdp ingest --api` run: its wall seconds, and whether it was killed."""
    cmd = [*MYSIMBDP, "ingest", str(path), "--tenant", TENANT, "--api", api]
    t0 = time.perf_counter()
    cli = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = cli.communicate(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        cli.send_signal(signal.SIGKILL)
        cli.communicate()
        return time.perf_counter() - t0, True
    seconds = time.perf_counter() - t0
    if cli.returncode != 0:
        raise SystemExit(f"ingest --api failed (exit {cli.returncode}): {out.decode()[-2000:]} {err.decode()[-2000:]}")
    return seconds, False


def run_tus(work: Path, path: Path, name: str, kill_every_s: float | None) -> dict[str, Any]:
    """The remote CLI's resumable upload; ``kill_every_s``: SIGKILL it that long after each start,
    :data:`INTERRUPTS` times, then let it finish."""
    with BenchPlatform(work, name, PROFILE) as plat:
        assert plat.up is not None
        env = _cli_env(plat, work, _key(plat))
        runs: list[dict[str, Any]] = []
        with TreeSampler() as sampler:
            sampler.watch("up", plat.up.pid)
            while True:
                kill = kill_every_s if kill_every_s is not None and len(runs) < INTERRUPTS else None
                seconds, killed = _ingest(path, _api(plat), env, kill)
                runs.append({"seconds": round(seconds, 3), "killed": killed})
                if not killed:
                    break
        total = sum(r["seconds"] for r in runs)
    shutil.rmtree(work / "cli-cache", ignore_errors=True)
    return {
        "seconds": round(total, 3),
        "mb_per_s": round(path.stat().st_size / total / 1e6, 1),
        "runs": runs,
        "up_peak_rss_bytes": sum_peak(sampler),
        "up_peak_rss_at_once_bytes": sampler.peak_total_bytes,
    }


# -- the run --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="the file's size (decimal units: 1G = 10^9 bytes)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where the files and homes go (default: a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "uploads.json")
    parser.add_argument("--serve-baseline", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline, args.work_dir)
        return
    size = parse_size(args.size)
    base = args.work_dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < 4 * size + bigfile.DISK_MARGIN_BYTES:
        raise SystemExit(f"{base}: {human(free)} free, needs {human(4 * size + bigfile.DISK_MARGIN_BYTES)}")
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-uploads-", dir=base))
    started, at_start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine()
    try:
        path = work / "readings.csv"
        rows = bigfile.write_csv(path, size, *bigfile.make_block(work))
        print(f"{human(path.stat().st_size)} CSV ({rows:,} rows) in {work}; load average {os.getloadavg()}")
        baseline = run_baseline(work, path)
        print(f"(a) raw baseline: {baseline['seconds']:.2f} s ({baseline['mb_per_s']} MB/s)")
        posted = run_post(work, path)
        ratio = round(baseline["seconds"] / posted["seconds"], 3)
        print(
            f"(b) POST /v1/files: {posted['seconds']:.2f} s to the answer ({posted['mb_per_s']} MB/s; last byte sent "
            f"at {posted['sent_s']} s), status {posted['answer']['status']}; {ratio} x the baseline "
            f"(target ≥ {POST_TARGET}); up's peak RSS {posted['up_peak_rss_bytes'] / 1e6:.0f} MB "
            f"(target < {RSS_TARGET_BYTES / 1e6:.0f} MB)"
        )
        if "received_s" in posted:
            print(
                f"    of which the body received and on disk (sha256, writes, fsync) {posted['received_s']:.2f} s, "
                f"the staging check (rename to a claim, scan, record) {posted['staging_check_s']:.2f} s"
            )
        later = run_post(work, path, respond_async=True)
        async_ratio = round(baseline["seconds"] / later["seconds"], 3)
        print(
            f"(b') POST /v1/files, Prefer: respond-async: {later['seconds']:.2f} s to the 202 ({later['mb_per_s']} "
            f"MB/s), status {later['answer']['status']}; {async_ratio} x the baseline (target ≥ {POST_TARGET}); "
            f"staged {later.get('staged_s')} s after the request's start (GET saw it {later['checked_s']} s after "
            f"the 202); up's peak RSS {later['up_peak_rss_bytes'] / 1e6:.0f} MB"
        )
        plain = run_tus(work, path, "tus", None)
        print(f"(c) tus uninterrupted: {plain['seconds']:.2f} s ({plain['mb_per_s']} MB/s)")
        broken = run_tus(work, path, "tus-killed", plain["seconds"] / (INTERRUPTS + 1))
        resume_ratio = round(broken["seconds"] / plain["seconds"], 3)
        print(
            f"    tus killed {INTERRUPTS} times: {broken['seconds']:.2f} s in {len(broken['runs'])} runs "
            f"({[r['seconds'] for r in broken['runs']]}); {resume_ratio} x uninterrupted (target ≤ {RESUME_TARGET})"
        )
        result = {
            "started": started,
            "machine": {**at_start, "platform": platform.platform(), "load_avg_at_end": os.getloadavg()},
            "size_bytes": path.stat().st_size,
            "rows": rows,
            "baseline": baseline,
            "post": posted,
            "post_vs_baseline": ratio,
            "post_async": later,
            "post_async_vs_baseline": async_ratio,
            "post_target_met": async_ratio >= POST_TARGET,
            "up_rss_target_met": max(posted["up_peak_rss_bytes"], later["up_peak_rss_bytes"]) < RSS_TARGET_BYTES,
            "tus": plain,
            "tus_interrupted": broken,
            "interrupted_vs_plain": resume_ratio,
            "resume_target_met": resume_ratio <= RESUME_TARGET,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"load average at the end {os.getloadavg()}; wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
