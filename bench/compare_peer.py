"""lkps against the incumbent's stack, side by side in one run: `POST /api/session/start` on both, alternately.

The peer is `../shared/bench/peer-express` (Express 5 + jose + livekit-server-sdk + pg, relative to the
repository root; `--peer` names another copy). Both servers validate the same RS256 tokens from lkps's
embedded dev issuer (the peer trusts its CA through NODE_EXTRA_CA_CERTS), have the same agent registered,
and write one session row per start into a PostgreSQL database of their own with synchronous commit on.
Both reach PostgreSQL over plain TCP on loopback, which is what the peer's `pg` does by default (asyncpg
would negotiate TLS when the server offers it). Each round drives both with `wrk -t1 -c32`, one after the
other (A B A B ...), for each token count: one token reused, then N distinct users' tokens rotating. It
prints each run, then the ranges and the ratio of the runs made in the same round, with the load average,
the worker CPU per request of each server, and (with valgrind) callgrind instructions per session start
of lkps (`bench/instructions.py`). Without the peer it says so and measures lkps alone.

    python bench/compare_peer.py                                 # 3 rounds, 1 and 5,000 tokens, 10 s runs
    python bench/compare_peer.py --rounds 5 --duration 15 --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.harness import (
    Deployment,
    count_rows,
    cpu_seconds,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    wait_ready,
)
from bench.instructions import CONCURRENCY, measure
from bench.session_start import LUA, run_wrk

ROOT = Path(__file__).resolve().parent.parent
PEER = Path("shared") / "bench" / "peer-express"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres?ssl=disable"


def default_peer() -> Path:
    """`../shared/bench/peer-express` beside the repository; from a linked worktree, beside its main one."""
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    roots = [ROOT] + ([Path(common).parent] if common else [])
    for root in roots:
        if (root.parent / PEER).is_dir():
            return root.parent / PEER
    return ROOT.parent / PEER


class Peer:
    """The peer in a copy of its own (its node_modules are installed there, never in ../shared)."""

    def __init__(self, source: Path, work: Path, deployment: Deployment, postgres_url: str) -> None:
        self.dir = work / "peer-express"
        shutil.copytree(source, self.dir, ignore=shutil.ignore_patterns("node_modules"))
        self.database_url = asyncio.run(create_postgres_database(postgres_url, "on"))
        self.postgres_server = postgres_url
        self.port = free_port()
        pg_url = make_url(self.database_url).set(drivername="postgresql", query={})
        self.env = {
            **deployment.process_env(),
            "PEER_DATABASE_URL": pg_url.render_as_string(hide_password=False),
            "PEER_HOST": "127.0.0.1",
            "PEER_PORT": str(self.port),
            "NODE_EXTRA_CA_CERTS": deployment.env["LKPS_ENTRA_CA_BUNDLE"],
            "NODE_ENV": "production",
        }
        self._node("npm", "ci", "--no-audit", "--no-fund")
        self._node("node", "server.mjs", "migrate")
        self._node("node", "server.mjs", "register", deployment.agent)
        self.log = (work / "peer.log").open("ab")

    def _node(self, *command: str) -> None:
        done = subprocess.run(
            command, cwd=self.dir, env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"peer: {' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    @contextmanager
    def server(self) -> Iterator[subprocess.Popen[bytes]]:
        process = subprocess.Popen(
            ["node", "server.mjs"], cwd=self.dir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            wait_ready(f"http://127.0.0.1:{self.port}/api/health/live", process)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=10)

    def close(self) -> None:
        self.log.close()
        asyncio.run(drop_postgres_database(self.postgres_server, self.database_url))


def measured_run(
    name: str,
    port: int,
    script: Path,
    args: argparse.Namespace,
    cpu: Callable[[], float],
    database_url: str,
) -> dict[str, Any]:
    """One wrk run after a warm-up, with the server's CPU time and the rows it wrote meanwhile."""
    run_wrk(port, script, args.warmup, args.connections)
    rows_before = asyncio.run(count_rows(database_url))
    cpu_before = cpu()
    result = run_wrk(port, script, args.duration, args.connections)
    cpu_used = cpu() - cpu_before
    rows = asyncio.run(count_rows(database_url)) - rows_before
    ok = result["requests"] - result["non_2xx"] - result["socket_errors"]
    return result | {
        "server": name,
        "cpu_us_per_request": round(1e6 * cpu_used / max(result["requests"], 1)),
        "ok_responses": ok,
        "rows_written": rows,
        "load_average": round(os.getloadavg()[0], 2),
    }


def print_run(run: dict[str, Any]) -> None:
    print(
        f"round {run['round']}  {run['server']:5s} tokens={run['tokens']:<5d} {run['rps']:7.0f} req/s  "
        f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms  non-2xx {run['non_2xx']}  "
        f"rows {run['rows_written']} / 200s {run['ok_responses']}  CPU/request {run['cpu_us_per_request']} µs  "
        f"load {run['load_average']}",
        flush=True,
    )


def summary(runs: list[dict[str, Any]], token_counts: list[int]) -> list[str]:
    def span(values: list[float], fmt: str) -> str:
        return f"{min(values):{fmt}} to {max(values):{fmt}}" if values else "-"

    lines = []
    for tokens in token_counts:
        for server in ("lkps", "peer"):
            mine = [r for r in runs if r["tokens"] == tokens and r["server"] == server]
            if mine:
                lines.append(
                    f"{server:5s} tokens={tokens:<5d} {span([r['rps'] for r in mine], ',.0f')} req/s, "
                    f"p99 {span([r['p99_ms'] for r in mine], '.1f')} ms, "
                    f"CPU/request {span([r['cpu_us_per_request'] for r in mine], '.0f')} µs"
                )
        ratios = []
        for lkps in (r for r in runs if r["tokens"] == tokens and r["server"] == "lkps"):
            peer = [
                r
                for r in runs
                if r["tokens"] == tokens and r["server"] == "peer" and r["round"] == lkps["round"]
            ]
            if peer and peer[0]["rps"]:
                ratios.append(lkps["rps"] / peer[0]["rps"])
        if ratios:
            lines.append(f"ratio tokens={tokens:<5d} {span(ratios, '.2f')} (lkps / peer, same round)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer", type=Path, default=default_peer(), help="the peer-express directory")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, action="append", help="distinct tokens per run (repeatable)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--instructions", type=int, default=400, help="callgrind session starts (0: skip)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args()
    for tool in ("wrk", "node", "npm"):
        if shutil.which(tool) is None and (tool == "wrk" or args.peer.is_dir()):
            raise SystemExit(f"{tool} is required")
    token_counts = args.tokens or [1, 5000]
    peer_present = (args.peer / "server.mjs").is_file()
    if not peer_present:
        print(f"{args.peer} is absent: measuring lkps alone, without the peer", flush=True)

    work = Path(tempfile.mkdtemp(prefix="lkps-compare-"))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    extra_env = {"LKPS_RATE_LIMIT_PER_MINUTE": "0", "LKPS_USER_RATE_LIMIT_PER_MINUTE": "0"}
    deployment = Deployment.create(
        work, "postgres", args.postgres_url, synchronous_commit="on", extra_env=extra_env
    )
    runs: list[dict[str, Any]] = []
    peer = None
    try:
        scripts = {}
        for count in token_counts:
            tokens = work / f"tokens-{count}.txt"
            tokens.write_text("\n".join(deployment.user_token(f"user{i}") for i in range(count)))
            scripts[count] = work / f"wrk-{count}.lua"
            scripts[count].write_text(LUA % {"tokens": tokens, "agent": deployment.agent})
        peer = Peer(args.peer, work, deployment, args.postgres_url) if peer_present else None
        with deployment.server() as lkps, peer.server() if peer else _nothing() as node:
            for round_number in range(1, args.rounds + 1):
                for count in token_counts:
                    servers: list[tuple[str, int, Callable[[], float], str]] = [
                        ("lkps", lkps.port, lambda: lkps.worker_cpu_seconds()[0], deployment.database_url)
                    ]
                    if peer is not None and node is not None:
                        pid = node.pid
                        servers.append(
                            ("peer", peer.port, lambda pid=pid: cpu_seconds(pid), peer.database_url)
                        )
                    for name, port, cpu, database_url in servers:
                        run = measured_run(name, port, scripts[count], args, cpu, database_url)
                        run |= {"round": round_number, "tokens": count}
                        runs.append(run)
                        print_run(run)
    finally:
        if peer is not None:
            peer.close()
        deployment.close()
        shutil.rmtree(work, ignore_errors=True)

    instructions = None
    if args.instructions and shutil.which("valgrind"):
        requests = args.instructions - args.instructions % CONCURRENCY
        instructions = (
            measure(
                argparse.Namespace(
                    db="postgres",
                    postgres_url=args.postgres_url,
                    requests=requests,
                    path="/api/session/start",
                    verified_token_cache_size=None,
                )
            )
            / requests
        )
    print(f"\nstarted {started}; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    for line in summary(runs, token_counts):
        print(line)
    if instructions is not None:
        print(f"lkps callgrind instructions per session start: {instructions:,.0f}")
    if any(r["rows_written"] < r["ok_responses"] for r in runs):
        print("a server answered 200 for more sessions than it recorded", file=sys.stderr)
        sys.exit(1)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "instructions_per_start": instructions}, indent=2))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
