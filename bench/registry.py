"""Registry benchmark: model create/list throughput and a streamed 1 GB artifact upload and download.

Starts a real ``aiservice serve`` in a subprocess against a fresh temporary ``DATA_DIR`` (SQLite and
local artifacts), drives it over HTTP with httpx, samples the server's RSS during the upload, and
prints one table. Run it as ``.venv/bin/python bench/registry.py`` (``make bench``); ``--quick`` is a
smoke run that takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

MiB = 1 << 20
GiB = 1 << 30
TENANT = "default"
API = "/api/v1/ai"
CHUNK = MiB
RSS_INTERVAL_S = 0.05
STARTUP_TIMEOUT_S = 60.0
CONCURRENCY = 4
# The first large write of a run is often much slower (on a VM the host faults in guest pages the
# page cache has not used yet); the floor is the faster of two runs, and the upload reuses those pages.
DISK_RUNS = 2
TOKEN_ARGS = ("token", "create", "--tenant", TENANT, "--role", "admin", "--ttl", "2h")
# Settings the benchmark must not inherit from the caller's environment: it wants its own SQLite
# database and artifact store under the temporary DATA_DIR, and a generated development secret.
ISOLATED_ENV = ("DATABASE_URL", "DB_HOST", "ARTIFACT_ROOT", "JWT_SECRET", "ENVIRONMENT", "AUTO_MIGRATE")


# -- results -------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Latencies of one series of requests and the wall time it took."""

    label: str
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in ms."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


@dataclass
class TransferResult:
    size_bytes: int
    wall_s: float = 0.0
    ok: bool = False
    detail: str = ""
    first_byte_s: float = math.nan
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    server_cpu_s: float = math.nan
    client_cpu_s: float = math.nan

    @property
    def mb_per_s(self) -> float:
        return self.size_bytes / MiB / self.wall_s if self.wall_s else math.nan


# -- the server ----------------------------------------------------------------------------------


def own_cpu_seconds() -> float:
    """User plus system CPU time this (client) process has used so far."""
    times = os.times()
    return times.user + times.system


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``aiservice serve`` as a subprocess, with its stdout and stderr in files under the work dir."""

    def __init__(self, workdir: Path, max_artifact_bytes: int) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / "server.stdout"
        self.stderr_path = workdir / "server.stderr"
        env = {k: v for k, v in os.environ.items() if k.upper() not in ISOLATED_ENV}
        env |= {
            "DATA_DIR": str(self.data_dir),
            "LOG_LEVEL": "WARNING",
            "MAX_ARTIFACT_BYTES": str(max_artifact_bytes),
            "PYTHONUNBUFFERED": "1",
        }
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = math.nan

    def start(self) -> None:
        cmd = [sys.executable, "-m", "aiservice", "serve", "--port", str(self.port), "--host", "127.0.0.1"]
        started = time.perf_counter()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # cwd is the work dir so that no .env file of the caller's checkout is picked up.
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.workdir, stdout=out, stderr=err)
        deadline = started + STARTUP_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.stderr_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"the server did not answer /health in {STARTUP_TIMEOUT_S:.0f}s:\n{self.stderr_tail()}"
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def token(self) -> str:
        """The admin token of the startup banner, else one made with ``aiservice token create``."""
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("export TOKEN="):
                return line.removeprefix("export TOKEN=").strip()
        made = subprocess.run(
            [sys.executable, "-m", "aiservice", *TOKEN_ARGS],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.strip()

    def rss(self) -> int:
        """Resident memory of the server process and any children, in bytes."""
        try:
            proc = psutil.Process(self.pid)
            total: int = proc.memory_info().rss
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            return total
        except psutil.NoSuchProcess:
            return 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode


class RssSampler:
    """Samples the server's RSS every ``RSS_INTERVAL_S`` in a background thread while in a ``with``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.server.rss())
            self._stop.wait(RSS_INTERVAL_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.server.rss())

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


# -- the workload --------------------------------------------------------------------------------


def client(server: Server, token: str, timeout: httpx.Timeout | float = 30.0) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT},
        timeout=timeout,
    )


def model_body(name: str, i: int) -> dict[str, Any]:
    return {
        "name": name,
        "framework": "sklearn",
        "tags": ["bench", f"t{i % 10}"],
        "description": f"Benchmark model number {i}, created by bench/registry.py.",
    }


def timed_series(
    label: str,
    count: int,
    workers: int,
    make_client: Callable[[], httpx.Client],
    call: Callable[[httpx.Client, int], str | None],
) -> Timing:
    """Run ``call(client, i)`` for i in range(count) over ``workers`` keep-alive clients.

    ``call`` returns None on success or a short description of what went wrong.
    """
    timing = Timing(label)
    lock = threading.Lock()
    starts: list[float] = []
    # The clock starts when every worker has its connection open.
    ready = threading.Barrier(workers, action=lambda: starts.append(time.perf_counter()))

    def work(indices: range) -> None:
        with make_client() as c:
            c.get("/health")  # open the connection outside the measurement
            ready.wait(timeout=60)
            for i in indices:
                t0 = time.perf_counter()
                problem = call(c, i)
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    timing.latencies_ms.append(elapsed)
                    if problem is not None:
                        timing.errors.append(problem)

    slices = [range(w, count, workers) for w in range(workers)]
    if workers == 1:
        work(slices[0])
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(work, s) for s in slices]:
                future.result()
    timing.wall_s = time.perf_counter() - starts[0]
    return timing


def expect(response: httpx.Response, status: int) -> str | None:
    if response.status_code == status:
        return None
    request = response.request
    return f"{request.method} {request.url.path} -> {response.status_code}: {response.text[:300]}"


def bench_creates(server: Server, token: str, n: int) -> list[Timing]:
    def create(prefix: str, offset: int) -> Callable[[httpx.Client, int], str | None]:
        def call(c: httpx.Client, i: int) -> str | None:
            return expect(c.post(f"{API}/models", json=model_body(f"{prefix}-{i}", i + offset)), 201)

        return call

    return [
        timed_series("create model, 1 client", n, 1, lambda: client(server, token), create("bench", 0)),
        timed_series(
            f"create model, {CONCURRENCY} clients",
            n,
            CONCURRENCY,
            lambda: client(server, token),
            create("bench-par", n),
        ),
    ]


def bench_lists(server: Server, token: str, m: int) -> list[Timing]:
    def get(params: dict[str, str | int]) -> Callable[[httpx.Client, int], str | None]:
        def call(c: httpx.Client, _i: int) -> str | None:
            response = c.get(f"{API}/models", params=params)
            if (problem := expect(response, 200)) is not None:
                return problem
            return None if response.json()["items"] else f"GET {response.request.url} returned no items"

        return call

    plain: dict[str, str | int] = {"limit": 50}
    filtered: dict[str, str | int] = {"limit": 50, "tag": "t1", "q": "bench-1"}
    return [
        timed_series("list ?limit=50, 1 client", m, 1, lambda: client(server, token), get(plain)),
        timed_series(
            f"list ?limit=50, {CONCURRENCY} clients",
            m,
            CONCURRENCY,
            lambda: client(server, token),
            get(plain),
        ),
        timed_series("list ?tag=t1&q=bench-1, 1 client", m, 1, lambda: client(server, token), get(filtered)),
    ]


PAYLOAD_SEED = os.urandom(CHUNK)


def artifact_chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes in 1 MiB chunks: one random MiB, each copy stamped with its index to differ.

    The same bytes on every call in one run, so the disk baseline's digest is the upload's.
    """
    base = PAYLOAD_SEED
    sent, index = 0, 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield (index.to_bytes(8, "big") + base[8:n]) if n > 8 else base[:n]
        sent += n
        index += 1


def disk_baseline(path: Path, size: int) -> tuple[float, str]:
    """Seconds to write ``size`` bytes to ``path`` while hashing them (and fsync), and their SHA-256."""
    sha = hashlib.sha256()
    started = time.perf_counter()
    with path.open("wb", buffering=0) as f:
        for chunk in artifact_chunks(size):
            sha.update(chunk)
            f.write(chunk)
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed, sha.hexdigest()


class MultipartBody:
    """A multipart/form-data body with a ``metadata`` field and a streamed ``file`` part."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.boundary = f"bench-{secrets.token_hex(16)}"
        metadata = json.dumps({"description": "bench/registry.py upload", "params": {"sizeBytes": size}})
        self.preamble = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{metadata}\r\n"
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="bench-artifact.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self.sent = 0

    @property
    def content_length(self) -> int:
        return len(self.preamble) + self.size + len(self.epilogue)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.content_length),
        }

    def __iter__(self) -> Iterator[bytes]:
        yield self.preamble
        for chunk in artifact_chunks(self.size):
            self.sent += len(chunk)
            yield chunk
        yield self.epilogue


def bench_upload(server: Server, token: str, size: int, digest: str) -> tuple[TransferResult, str | None]:
    """Upload ``size`` bytes as a new version of a fresh model; the result and the model id."""
    result = TransferResult(size)
    timeout = httpx.Timeout(60.0, read=900.0)
    with client(server, token, timeout) as c:
        created = c.post(f"{API}/models", json=model_body("bench-upload", 0))
        if created.status_code != 201:
            result.detail = expect(created, 201) or ""
            return result, None
        model_id: str = created.json()["id"]
        body = MultipartBody(size)
        time.sleep(0.5)  # let the server settle after the create/list series before the baseline RSS
        result.rss_before = server.rss()
        cpu_before, own_before = server.cpu_seconds(), own_cpu_seconds()
        with RssSampler(server) as sampler:
            started = time.perf_counter()
            try:
                response = c.post(
                    f"{API}/models/{model_id}/versions", content=iter(body), headers=body.headers
                )
            except httpx.HTTPError as exc:
                result.detail = f"{type(exc).__name__}: {exc} after {body.sent} of {size} file bytes sent"
                return result, model_id
            result.wall_s = time.perf_counter() - started
        result.rss_peak, result.rss_after = sampler.peak, server.rss()
        result.server_cpu_s = server.cpu_seconds() - cpu_before
        result.client_cpu_s = own_cpu_seconds() - own_before
        if response.status_code != 201:
            result.detail = expect(response, 201) or ""
            return result, model_id
        artifact = response.json()["artifact"]
        problems = []
        if artifact["digest"] != digest:
            problems.append(f"digest {artifact['digest']} != client-side {digest}")
        if artifact["sizeBytes"] != size:
            problems.append(f"sizeBytes {artifact['sizeBytes']} != {size}")
        result.ok = not problems
        result.detail = "; ".join(problems) or f"digest matches ({digest[:16]}...)"
        return result, model_id


def bench_download(server: Server, token: str, model_id: str, size: int, digest: str) -> TransferResult:
    result = TransferResult(size)
    timeout = httpx.Timeout(60.0, read=900.0)
    with client(server, token, timeout) as c:
        result.rss_before = server.rss()
        cpu_before, own_before = server.cpu_seconds(), own_cpu_seconds()
        received = 0
        with RssSampler(server) as sampler:
            started = time.perf_counter()
            with c.stream("GET", f"{API}/models/{model_id}/versions/1/artifact") as response:
                result.first_byte_s = time.perf_counter() - started  # headers: after the server's re-hash
                if response.status_code != 200:
                    response.read()
                    result.detail = expect(response, 200) or ""
                    return result
                for chunk in response.iter_raw(CHUNK):
                    received += len(chunk)
            result.wall_s = time.perf_counter() - started
        result.rss_peak, result.rss_after = sampler.peak, server.rss()
        result.server_cpu_s = server.cpu_seconds() - cpu_before
        result.client_cpu_s = own_cpu_seconds() - own_before
        problems = []
        if response.headers.get("x-checksum-sha256") != digest:
            problems.append(f"X-Checksum-SHA256 {response.headers.get('x-checksum-sha256')} != {digest}")
        if received != size:
            problems.append(f"received {received} bytes, expected {size}")
        result.ok = not problems
        result.detail = "; ".join(problems) or "size and X-Checksum-SHA256 match"
        return result


# -- the report ----------------------------------------------------------------------------------


def mb(n: int) -> str:
    return f"{n / MiB:,.1f} MB"


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / GiB:.1f} GiB RAM, "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}, load average {load}"
    )


def report_requests(timings: list[Timing]) -> str:
    rows = [
        [
            t.label,
            str(t.count),
            f"{t.rate:,.0f}",
            f"{t.percentile(50):.2f}",
            f"{t.percentile(95):.2f}",
            f"{t.percentile(99):.2f}",
            f"{max(t.latencies_ms, default=math.nan):.1f}",
            str(len(t.errors)),
        ]
        for t in timings
    ]
    header = ["requests", "n", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"]
    return table("Registry requests (keep-alive httpx clients)", header, rows)


def report_transfers(
    size: int, disk_runs: list[float], upload: TransferResult | None, download: TransferResult | None
) -> str:
    disk_rate = size / MiB / min(disk_runs)

    def row(label: str, seconds: float, t: TransferResult | None = None) -> list[str]:
        rate = size / MiB / seconds
        cpu = ["", ""] if t is None else [f"{t.server_cpu_s:.2f}", f"{t.client_cpu_s:.2f}"]
        return [label, f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / disk_rate:.2f}", *cpu]

    rows = [
        row(f"disk baseline {n}: write + sha256 + fsync, in-process", seconds)
        for n, seconds in enumerate(disk_runs, 1)
    ]
    if upload is not None and upload.wall_s:
        rows.append(row("upload: multipart POST .../versions", upload.wall_s, upload))
    if download is not None and download.wall_s:
        rows.append(row("download: GET .../versions/1/artifact", download.wall_s, download))
    text = table(
        f"Artifact of {mb(size)}",
        ["transfer", "seconds", "MB/s", "x best disk", "server CPU s", "client CPU s"],
        rows,
    )
    mem_rows = [
        [name, mb(t.rss_before), mb(t.rss_peak), mb(t.rss_peak - t.rss_before), mb(t.rss_after)]
        for name, t in (("upload", upload), ("download", download))
        if t is not None and t.wall_s
    ]
    if mem_rows:
        text += "\n\n" + table(
            f"Server RSS (sampled every {RSS_INTERVAL_S * 1000:.0f} ms)",
            ["during", "before", "peak", "growth", "after"],
            mem_rows,
        )
    notes = []
    if upload is not None:
        notes.append(f"upload: {'OK' if upload.ok else 'FAILED'}: {upload.detail}")
    if download is not None:
        notes.append(f"download: {'OK' if download.ok else 'FAILED'}: {download.detail}")
        if download.ok:
            notes.append(
                f"download: headers after {download.first_byte_s:.2f}s (the server re-hashes the artifact "
                "before answering), body after that at "
                f"{size / MiB / max(download.wall_s - download.first_byte_s, 1e-9):,.0f} MB/s"
            )
    return text + ("\n" + "\n".join(notes) if notes else "")


def server_log_summary(server: Server) -> str:
    try:
        lines = server.stderr_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "server log: missing"
    if not lines:
        return "server log (WARNING and above): empty"
    shown = "\n".join(f"  {line[:300]}" for line in lines[-20:])
    return f"server log (WARNING and above): {len(lines)} lines, the last {min(len(lines), 20)}:\n{shown}"


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", type=int, default=None, help="models to create per series (500)")
    parser.add_argument("--lists", type=int, default=None, help="list requests per series (500)")
    parser.add_argument("--upload-mb", type=int, default=None, help="artifact size in MiB (1024)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 models, 100 lists, 64 MiB")
    args = parser.parse_args(argv)
    defaults = (100, 100, 64) if args.quick else (500, 500, 1024)
    for name, default in zip(("models", "lists", "upload_mb"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.upload_mb * MiB
    print(machine_line())
    print(f"settings: --models {args.models} --lists {args.lists} --upload-mb {args.upload_mb}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="aiservice-bench-"))
    server = Server(workdir, max_artifact_bytes=max(3 * GiB, 2 * size))
    failed = False
    try:
        server.start()
        token = server.token()
        print(
            f"server: pid {server.pid} on {server.base_url}, healthy after {server.startup_s:.2f}s",
            flush=True,
        )

        print("creating models...", flush=True)
        timings = bench_creates(server, token, args.models)
        print("listing models...", flush=True)
        timings += bench_lists(server, token, args.lists)

        print(f"disk baseline ({mb(size)})...", flush=True)
        disk_runs: list[float] = []
        for _ in range(DISK_RUNS):
            seconds, digest = disk_baseline(workdir / "baseline.bin", size)
            disk_runs.append(seconds)
        print(f"uploading {mb(size)}...", flush=True)
        upload, model_id = bench_upload(server, token, size, digest)
        download = None
        if upload.ok and model_id is not None:
            print(f"downloading {mb(size)}...", flush=True)
            download = bench_download(server, token, model_id, size, digest)

        print()
        print(report_requests(timings))
        print()
        print(report_transfers(size, disk_runs, upload, download))
        errors = [e for t in timings for e in t.errors]
        if errors:
            print(f"\n{len(errors)} request errors; the first ones:")
            for e in errors[:5]:
                print(f"  {e}")
        failed = bool(errors) or not upload.ok or download is None or not download.ok
    finally:
        code = server.stop()
        print()
        print(server_log_summary(server))
        # uvicorn re-raises the SIGTERM it handled after its graceful shutdown, hence -15.
        how = " (SIGTERM, after a graceful shutdown)" if code == -signal.SIGTERM else ""
        print(f"server exited with {code}{how}")
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
