"""What the load scripts (and the slow hardening tests) share: a real `lkps serve` on loopback, validating
real RS256 tokens from the embedded dev issuer (over HTTPS), with the demo agent registered, on SQLite or
on a PostgreSQL database of its own; plus row counts and the worker's memory from /proc.

    with Deployment.create(work_dir, "postgres", postgres_url) as deployment:
        with deployment.server() as server:
            ...  # server.url, server.worker_rss_kib(), server.kill()
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from authz.dev_issuer import DEMO_AGENT, DEMO_BACKEND, DevIssuer, DevState
from gateway.dev import dev_environment, prepare_database
from gateway.persistence.db import create_engine
from gateway.persistence.tables import sessions, worker_presence

DEFAULT_POSTGRES_URL = os.environ.get(
    "LKPS_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def livekit_env(url: str, key: str, secret: str, **extra: str) -> dict[str, str]:
    """The LKPS_LIVEKIT_* variables of a deployment pointed at the LiveKit (or fake) at `url`."""
    return {"LKPS_LIVEKIT_URL": url, "LKPS_LIVEKIT_API_KEY": key, "LKPS_LIVEKIT_API_SECRET": secret, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def count_rows(url: str) -> int:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(sessions))).scalar_one())
    finally:
        await engine.dispose()


async def session_rows(url: str) -> list[tuple[str, str]]:
    """(request_id, room_name) of every session row."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(sessions.c.request_id, sessions.c.room_name))
            return [(row.request_id, row.room_name) for row in result]
    finally:
        await engine.dispose()


async def create_postgres_database(server_url: str, synchronous_commit: str = "on") -> str:
    name = f"lkps_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
        # performance.md measured the incumbent with synchronous_commit off; "on" is PostgreSQL's default.
        await conn.execute(text(f"ALTER DATABASE {name} SET synchronous_commit = {synchronous_commit}"))
    await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(server_url: str, url: str) -> None:
    engine = create_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)"))
    await engine.dispose()


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 600) -> None:
    """Until `url` answers 200. With `process`, as long as it lives (a loaded machine starts it slowly; one
    that exited never answers); `timeout` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode} before it was ready at {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, reset, or a read timeout while it starts
            time.sleep(0.2)
    raise SystemExit(f"server not ready at {url}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process (or one of its threads), from /proc (Linux)."""
    path = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    # Fields 14 and 15 are utime and stime in clock ticks; the rsplit skips the command name (field 2).
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 is the parent pid; the command name (field 2) may contain spaces, hence the rsplit.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Server:
    """One `lkps serve` process group (granian's main process and its worker)."""

    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pid(self) -> int:
        workers = children(self.process.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one granian worker under {self.process.pid}, found {workers}")
        return workers[0]

    def worker_rss_kib(self) -> int:
        return rss_kib(self.worker_pid())

    def worker_cpu_seconds(self) -> tuple[float, float]:
        """CPU time of the worker: the whole process (with granian's I/O threads) and its main thread,
        the one that runs the event loop and all the Python code."""
        pid = self.worker_pid()
        return cpu_seconds(pid), cpu_seconds(pid, pid)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hook, no flush, as a node failure would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


async def seed_presence(database_url: str, agent: str, deployment: str = "") -> None:
    """Record a worker of `agent` (in `deployment`) as connected on a replica that never goes stale: session
    starts to it then succeed with no worker running, for benchmarks and tests about everything but the
    agent in the room."""
    engine = create_engine(database_url, pool_size=1)
    forever = datetime.now(UTC) + timedelta(days=3650)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(worker_presence).values(
                    connection_id=str(uuid.uuid4()),
                    agent_app_id=agent,
                    deployment=deployment,
                    replica="bench-harness",
                    registered_at=datetime.now(UTC),
                    seen_at=forever,
                )
            )
    finally:
        await engine.dispose()


@dataclass
class Deployment:
    """The dev issuer, the environment of a gateway pointed at it, and a migrated database with the demo
    agent registered; `server()` starts `lkps serve` against it (as often as needed, on the same data)."""

    work: Path
    issuer: DevIssuer
    env: dict[str, str]
    agent: str
    postgres_server: str | None  # set when the database is a PostgreSQL database of its own

    @classmethod
    def create(
        cls,
        work: Path,
        db: str = "sqlite",
        postgres_url: str = DEFAULT_POSTGRES_URL,
        *,
        synchronous_commit: str = "on",
        extra_env: dict[str, str] | None = None,
        demo_worker: bool = True,
    ) -> Deployment:
        """With `demo_worker`, the demo agent counts as having a worker connected (see `seed_presence`)."""
        issuer = DevIssuer(DevState(work / "state")).start()
        env = dev_environment(issuer.state, issuer.authority)
        postgres_server = None
        if db == "postgres":
            env["LKPS_DATABASE_URL"] = asyncio.run(create_postgres_database(postgres_url, synchronous_commit))
            postgres_server = postgres_url
        env["LKPS_LOG_FORMAT"] = "json"
        env.update(extra_env or {})
        agent = asyncio.run(prepare_database(issuer.state, env["LKPS_DATABASE_URL"]))
        if demo_worker:
            asyncio.run(seed_presence(env["LKPS_DATABASE_URL"], agent))
        return cls(work, issuer, env, agent, postgres_server)

    @property
    def database_url(self) -> str:
        return self.env["LKPS_DATABASE_URL"]

    @property
    def state(self) -> DevState:
        return self.issuer.state

    def process_env(self) -> dict[str, str]:
        """The environment of a process of this deployment: ours, without any LKPS_* of the caller's."""
        return {**{k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}, **self.env}

    def user_token(self, user: str, lifetime: int | None = None) -> str:
        if lifetime is None:
            return self.state.user_token(self.issuer.authority, user)
        return self.state.user_token(self.issuer.authority, user, lifetime)

    def backend_token(self) -> str:
        return self.state.app_token(self.issuer.authority, self.state.client(DEMO_BACKEND))

    def agent_token(self) -> str:
        return self.state.app_token(self.issuer.authority, self.state.client(DEMO_AGENT))

    @contextmanager
    def server(self, command: list[str] | None = None, port: int | None = None) -> Iterator[Server]:
        """`lkps serve` on 127.0.0.1 in its own process group (output in `serve-<port>.log`), ready."""
        port = port or free_port()
        command = command or [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port"]
        log = (self.work / f"serve-{port}.log").open("ab")
        process = subprocess.Popen(
            [*command, str(port)],
            env=self.process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(process, port, log)
        try:
            wait_ready(f"{server.url}/api/health/ready", process)
            yield server
        finally:
            server.stop()
            log.close()

    def close(self) -> None:
        self.issuer.stop()
        if self.postgres_server is not None:
            asyncio.run(drop_postgres_database(self.postgres_server, self.database_url))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
