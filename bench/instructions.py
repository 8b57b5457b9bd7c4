"""CPU instructions per request of the real app, counted by callgrind: repeatable where wall-clock isn't.

On a shared 2-core machine, requests/s of the same build drift by ±20 % between runs; instruction counts
of the same code and input repeat to about ±0.2 %, so they show whether a change to the hot path helps.
The app (built by `app_from_env`, as granian builds it) runs in process, without granian, against the
embedded issuer's JWKS and a real database with the demo agent registered. After a warm-up, callgrind's
instrumentation is switched on for exactly the measured requests (8 concurrent clients), then off.
Cryptography is under-represented: valgrind hides the CPU's SHA extensions, and instructions are not time.

    apt-get install -y valgrind
    python bench/instructions.py --db postgres --requests 800
    python bench/instructions.py --path /api/health/live        # the framework floor
    python bench/instructions.py --verified-token-cache-size 0  # every request verifies RS256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONCURRENCY = 8


def measure(args: argparse.Namespace) -> int:
    """Run the child under callgrind and return the instructions of the measured requests."""
    from bench.harness import DEFAULT_POSTGRES_URL, Deployment  # noqa: PLC0415 - the child needs neither

    work = Path(tempfile.mkdtemp(prefix="lkps-instructions-"))
    extra_env = {"LKPS_RATE_LIMIT_PER_MINUTE": "0", "LKPS_USER_RATE_LIMIT_PER_MINUTE": "0"}
    if args.verified_token_cache_size is not None:
        extra_env["LKPS_VERIFIED_TOKEN_CACHE_SIZE"] = str(args.verified_token_cache_size)
    try:
        with Deployment.create(
            work, args.db, args.postgres_url or DEFAULT_POSTGRES_URL, extra_env=extra_env
        ) as d:
            env = {
                **d.process_env(),
                "LKPS_BENCH_TOKEN": d.user_token("user1"),
                "LKPS_BENCH_AGENT": d.agent,
                "PYTHONHASHSEED": "0",
            }
            out = work / "callgrind.out"
            child = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--child",
                    str(args.requests),
                    args.path,
                ],
                env=env,
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
            assert child.stdin is not None
            assert child.stderr is not None
            switches = {"WARM": "on", "DONE": "off"}
            for line in child.stderr:
                if line.strip() in switches:
                    subprocess.run(
                        ["callgrind_control", "-i", switches[line.strip()], str(child.pid)],
                        check=True,
                        capture_output=True,
                    )
                    child.stdin.write("go\n")
                    child.stdin.flush()
                elif "Error" in line or "Traceback" in line:
                    sys.stderr.write(line)
            if child.wait() != 0:
                raise SystemExit(f"the measured process failed ({child.returncode})")
            match = re.search(r"^totals: (\d+)", out.read_text(errors="replace"), re.MULTILINE)
            if match is None:
                raise SystemExit("callgrind wrote no totals")
            return int(match[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def drive(requests: int, path: str) -> None:
    """The child: start the app's lifespan, warm up, then send `requests` requests between two signals."""
    from gateway.app import app_from_env  # noqa: PLC0415 - configures logging from the environment

    app = app_from_env()
    start = path == "/api/session/start"
    body = (
        b'{"agent_entra_app_id": "'
        + os.environ["LKPS_BENCH_AGENT"].encode()
        + b'", "metadata": {"language": "en"}}'
        if start
        else b""
    )
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", b"Bearer " + os.environ["LKPS_BENCH_TOKEN"].encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def one() -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST" if start else "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect while the response is produced
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise SystemExit(f"{path} answered {statuses}")

    async def client(count: int) -> None:
        for _ in range(count):
            await one()

    async def wait_for_go(signal: str) -> None:
        print(signal, file=sys.stderr, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_messages = [{"type": "lifespan.startup"}]

    async def lifespan_receive() -> dict[str, Any]:
        if lifespan_messages:
            return lifespan_messages.pop()
        await asyncio.Event().wait()
        raise AssertionError

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_receive, started.put)
    )
    if (await started.get())["type"] != "lifespan.startup.complete":
        raise SystemExit("the app did not start")
    await asyncio.gather(*(client(200 // CONCURRENCY) for _ in range(CONCURRENCY)))
    await wait_for_go("WARM")
    await asyncio.gather(*(client(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    await wait_for_go("DONE")
    lifespan.cancel()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        import uvloop  # noqa: PLC0415 - granian's loop, as `lkps serve` runs it

        sys.stdout = open(os.devnull, "w")  # noqa: PTH123, SIM115 - the access log is not what is measured
        uvloop.run(drive(int(sys.argv[2]), sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--postgres-url")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument(
        "--path", choices=["/api/session/start", "/api/health/live"], default="/api/session/start"
    )
    parser.add_argument("--verified-token-cache-size", type=int)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is required: apt-get install -y valgrind")
    args.requests -= args.requests % CONCURRENCY
    total = measure(args)
    print(
        f"{args.path} on {args.db}: {total / args.requests:,.0f} instructions per request ({args.requests} requests)"
    )


if __name__ == "__main__":
    main()
