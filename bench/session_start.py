"""Load test of `POST /api/session/start`: granian (one worker) + wrk on loopback, SQLite or PostgreSQL.

The server is the real `lkps serve`, validating real RS256 tokens against the embedded dev issuer's JWKS
(over HTTPS), with a registered agent, writing a session row per 200. Two token modes: one token reused
by every request (what an SPA or backend does for an hour) and a pool of distinct tokens; with
`--verified-token-cache-size 0` every request verifies its RS256 signature and claims, so the
verified-token cache is not the only thing that makes it fast. After each run the session rows are
counted against wrk's 2xx count: every 200 must have its row. It also reports the worker's CPU time per
request, which varies far less between machines and runs than requests/s does.

    python bench/session_start.py --db sqlite --tokens 1 --tokens 5000 --duration 10
    python bench/session_start.py --db postgres --tokens 5000 --verified-token-cache-size 0
    python bench/session_start.py --db postgres --postgres-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    python bench/session_start.py --db postgres --rate-limit-per-minute 1000000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import DEFAULT_POSTGRES_URL, Deployment, count_rows

LUA = """
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local body = '{"agent_entra_app_id": "%(agent)s", "metadata": {"language": "en"}}'
local i = 0
request = function()
  i = i + 1
  local token = tokens[(i %% #tokens) + 1]
  return wrk.format("POST", "/api/session/start",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%.3f %%.3f %%.3f\\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def run_wrk(port: int, script: Path, duration: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or not rps:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    return {
        "requests": int(match[1]),
        "non_2xx": int(match[2]),
        "socket_errors": int(match[3]),
        "p50_ms": float(match[4]),
        "p99_ms": float(match[5]),
        "max_ms": float(match[6]),
        "rps": float(rps[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on")
    parser.add_argument("--tokens", type=int, action="append", help="distinct tokens per run (repeatable)")
    parser.add_argument("--duration", type=int, default=10)
    # Long enough for every one of 5,000 rotating tokens to be verified once before the measured run.
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=0,
        help="lkps's per-client and per-user limits (0: off, the default)",
    )
    parser.add_argument(
        "--redis-url",
        help="lkps's LKPS_REDIS_URL: the rate limits' budgets shared through Redis (default: in memory)",
    )
    parser.add_argument(
        "--verified-token-cache-size",
        type=int,
        help="lkps's verified-token cache (0: off, so every request verifies RS256; default: lkps's default)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="lkps-bench-"))
    limit = str(args.rate_limit_per_minute)
    extra_env = {"LKPS_RATE_LIMIT_PER_MINUTE": limit, "LKPS_USER_RATE_LIMIT_PER_MINUTE": limit}
    if args.redis_url:
        extra_env["LKPS_REDIS_URL"] = args.redis_url
    if args.verified_token_cache_size is not None:
        extra_env["LKPS_VERIFIED_TOKEN_CACHE_SIZE"] = str(args.verified_token_cache_size)
    deployment = Deployment.create(
        work,
        args.db,
        args.postgres_url,
        synchronous_commit=args.synchronous_commit,
        extra_env=extra_env,
    )
    # LKPS_BENCH_SERVER replaces the server command (the port is appended) to compare server settings.
    command = os.environ.get("LKPS_BENCH_SERVER", "").split() or None
    results = []
    try:
        with deployment.server(command) as server:
            for count in args.tokens or [1, 5000]:
                tokens = work / f"tokens-{count}.txt"
                tokens.write_text("\n".join(deployment.user_token(f"user{i}") for i in range(count)))
                script = work / f"wrk-{count}.lua"
                script.write_text(LUA % {"tokens": tokens, "agent": deployment.agent})
                run_wrk(server.port, script, args.warmup, args.connections)
                before = asyncio.run(count_rows(deployment.database_url))
                cpu_before = server.worker_cpu_seconds()
                result = run_wrk(server.port, script, args.duration, args.connections)
                cpu_after = server.worker_cpu_seconds()
                stored = asyncio.run(count_rows(deployment.database_url)) - before
                ok = result["requests"] - result["non_2xx"] - result["socket_errors"]
                worker_us, loop_us = (
                    1e6 * (after - before) / result["requests"]
                    for after, before in zip(cpu_after, cpu_before, strict=True)
                )
                label = (
                    args.db
                    if args.db == "sqlite"
                    else f"postgres (synchronous_commit={args.synchronous_commit})"
                )
                cache = "off" if args.verified_token_cache_size == 0 else "on"
                result |= {
                    "db": label,
                    "distinct_tokens": count,
                    "verified_token_cache": cache,
                    "rows_written": stored,
                    "ok_responses": ok,
                    "worker_cpu_us_per_request": round(worker_us),
                    "event_loop_cpu_us_per_request": round(loop_us),
                }
                results.append(result)
                print(
                    f"{label:38s} tokens={count:<6d} cache {cache:3s} {result['rps']:8.0f} req/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  "
                    f"p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:7.2f} ms  non-2xx {result['non_2xx']}  "
                    f"rows {stored} / 200s {ok}  CPU/request: worker {worker_us:.0f} µs, event loop {loop_us:.0f} µs",
                    flush=True,
                )
    finally:
        deployment.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
