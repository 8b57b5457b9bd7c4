"""Soak test: mixed traffic against a real `lkps serve` (granian, one worker) for minutes, on loopback.

The mix (weights, see --help): valid session starts (many distinct users and the backend service), invalid
tokens (expired, tampered, garbage, missing), agent registrations and, when lkps serves
`POST /api/livekit/webhook`, signed LiveKit webhooks about the rooms it started. A Python load generator
(httpx, N connections in a closed loop, bounded by time and by count) drives it, so no wrk is needed.

It prints a JSON summary: requests by kind and status, the 5xx and transport-error counts, p50/p99/max
latency per kind, session rows against 200 answers (every 200 must have exactly one row, by request id),
and the worker process's RSS at start (after warm-up), at the end and at its peak. Exit status 1 when a
check fails (any 5xx or transport error, a row missing or doubled, RSS grown by more than
--max-rss-growth-pct).

    python bench/soak.py --minutes 10 --db postgres
    python bench/soak.py --minutes 0.5 --db sqlite --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import DEFAULT_POSTGRES_URL, Deployment, Server, session_rows
from tests.support.livekit_webhooks import SignedWebhook, event, signed

KINDS = ("start", "invalid", "register", "webhook")
WEBHOOK_EVENTS = ("room_started", "participant_joined", "participant_left", "room_finished")
RSS_SAMPLE_SECONDS = 5.0


@dataclass
class Options:
    minutes: float = 10.0
    db: str = "sqlite"
    postgres_url: str = DEFAULT_POSTGRES_URL
    connections: int = 32
    max_requests: int = 10_000_000
    users: int = 2000
    warmup_seconds: float = 5.0
    weights: dict[str, int] = field(
        default_factory=lambda: {"start": 70, "invalid": 15, "register": 5, "webhook": 10}
    )
    rate_limit_per_minute: int = 0  # 0: lkps's rate limiter off, so the soak measures the rest
    max_rss_growth_pct: float = 25.0
    keep: bool = False


@dataclass
class Record:
    kind: str
    status: int | None  # None: no response (transport error)
    seconds: float


@dataclass
class Load:
    """The traffic generator: what to send, and everything that came back."""

    deployment: Deployment
    options: Options
    webhooks: bool
    records: list[Record] = field(default_factory=list)
    ok_starts: dict[str, str] = field(default_factory=dict)  # request id -> room name, for 200s
    refused_starts: set[str] = field(default_factory=set)  # request ids of session starts not answered 200
    rooms: list[str] = field(default_factory=list)  # rooms started and not finished yet
    errors: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        d = self.deployment
        self.users = [d.user_token(f"soak-user-{i}") for i in range(self.options.users)]
        self.backend = d.backend_token()
        self.agent_token = d.agent_token()
        valid = self.users[0]
        self.invalid = [
            None,  # no Authorization header
            "not-a-jwt",
            valid[:-8] + ("AAAAAAAA" if not valid.endswith("AAAAAAAA") else "BBBBBBBB"),  # tampered
            d.user_token("soak-expired", lifetime=-3600),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        ]
        self.start_body = json.dumps(
            {"agent_entra_app_id": d.agent, "metadata": {"language": "en", "soak": True}}
        ).encode()
        self.kinds = [kind for kind in KINDS if kind != "webhook" or self.webhooks]
        self.weights = [self.options.weights.get(kind, 0) for kind in self.kinds]

    async def request(self, client: httpx.AsyncClient, kind: str) -> None:
        headers = {"Content-Type": "application/json"}
        path, body = "/api/session/start", self.start_body
        if kind == "start":
            token = self.backend if random.random() < 0.1 else random.choice(self.users)
            headers["Authorization"] = f"Bearer {token}"
        elif kind == "invalid":
            invalid = random.choice(self.invalid)
            if invalid is not None:
                headers["Authorization"] = f"Bearer {invalid}"
        elif kind == "register":
            path, body = "/api/agent/register", b'{"enforce_client_authz": false, "agent_version": "soak"}'
            headers["Authorization"] = f"Bearer {self.agent_token}"
        else:
            webhook = self.webhook()
            path, body = "/api/livekit/webhook", webhook.body
            headers.update(webhook.headers)
        began = time.perf_counter()
        try:
            response = await client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
            self.records.append(Record(kind, None, time.perf_counter() - began))
            return
        self.records.append(Record(kind, response.status_code, time.perf_counter() - began))
        if kind in {"start", "invalid"}:
            request_id = response.headers["x-request-id"]  # lkps's own: rows are matched by it
            if response.status_code == 200:
                room = response.json()["room_name"]
                self.ok_starts[request_id] = room
                self.rooms.append(room)
            else:
                self.refused_starts.add(request_id)

    def webhook(self) -> SignedWebhook:
        """A LiveKit event about a room this soak started, signed as LiveKit signs it. As LiveKit does, no
        event follows a room's room_finished (lkps would take activity after the end for a reopened session
        and delete the room again, through a LiveKit the soak does not run)."""
        name = random.choice(WEBHOOK_EVENTS)
        if not self.rooms:
            room = "soak-no-room-yet"
        elif name == "room_finished":
            room = self.rooms.pop(random.randrange(len(self.rooms)))
        else:
            room = random.choice(self.rooms)
        identity = "soak-user" if name.startswith("participant") else None
        env = self.deployment.env
        key, secret = env["LKPS_LIVEKIT_API_KEY"], env["LKPS_LIVEKIT_API_SECRET"]
        return signed(event(name, room, identity=identity), key=key, secret=secret)

    async def run(self, url: str, seconds: float, max_requests: int) -> None:
        """`connections` workers in a closed loop until the time or the request budget is used up."""
        deadline = time.monotonic() + seconds
        sent = itertools.count()

        async def worker() -> None:
            # A client (and so a keep-alive connection) per worker: one shared pool of N connections costs
            # httpcore O(N) bookkeeping per request, which made the generator the bottleneck.
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
                while time.monotonic() < deadline and next(sent) < max_requests:
                    kind = random.choices(self.kinds, self.weights)[0]
                    await self.request(client, kind)

        await asyncio.gather(*(worker() for _ in range(self.options.connections)))


def webhook_endpoint_exists(url: str) -> bool:
    """lkps answers an unsigned webhook with 401 or 415 when the endpoint exists, 404 when it does not."""
    response = httpx.post(f"{url}/api/livekit/webhook", content=b"{}", timeout=10)
    return response.status_code != 404


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2)}


def summarize(load: Load, rows: list[tuple[str, str]], seconds: float, rss: dict[str, int]) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    latency: dict[str, list[float]] = defaultdict(list)
    for record in load.records:
        by_kind[record.kind][str(record.status) if record.status is not None else "no_response"] += 1
        latency[record.kind].append(record.seconds)
    server_errors = sum(1 for r in load.records if r.status is not None and r.status >= 500)
    row_count = Counter(request_id for request_id, _ in rows)
    row_rooms = dict(rows)
    missing = [rid for rid in load.ok_starts if row_count[rid] == 0]
    doubled = [rid for rid in load.ok_starts if row_count[rid] > 1]
    wrong_room = [rid for rid, room in load.ok_starts.items() if row_count[rid] and row_rooms[rid] != room]
    unexpected = [rid for rid in row_count if rid in load.refused_starts]
    growth = 100.0 * (rss["end"] - rss["start"]) / rss["start"]
    options = load.options
    summary: dict[str, Any] = {
        "db": options.db,
        "minutes": options.minutes,
        "seconds": round(seconds, 1),
        "connections": options.connections,
        "webhooks_in_mix": load.webhooks,
        "requests": len(load.records),
        "requests_per_second": round(len(load.records) / seconds, 1),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "server_errors_5xx": server_errors,
        "transport_errors": dict(load.errors),
        "latency": {kind: percentiles(values) for kind, values in sorted(latency.items())},
        "sessions": {
            "ok_responses": len(load.ok_starts),
            "rows": len(rows),
            "missing_rows": len(missing),
            "doubled_rows": len(doubled),
            "wrong_room": len(wrong_room),
            "rows_for_refused_requests": len(unexpected),
        },
        "worker_rss_kib": {**rss, "growth_pct": round(growth, 1)},
    }
    summary["ok"] = (
        server_errors == 0
        and not load.errors
        and not (missing or doubled or wrong_room or unexpected)
        and len(rows) == len(load.ok_starts)
        and growth <= options.max_rss_growth_pct
    )
    return summary


async def sample_rss(server: Server, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server.worker_rss_kib())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


async def drive(load: Load, server: Server) -> tuple[float, dict[str, int]]:
    """Warm up, then run the soak while sampling the worker's RSS; returns (seconds, rss)."""
    options = load.options
    await load.run(server.url, options.warmup_seconds, options.max_requests)
    load.records.clear()  # warm-up traffic is checked for rows but not counted in the figures
    start = server.worker_rss_kib()
    peak, stop = [start], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, peak, stop))
    began = time.monotonic()
    await load.run(server.url, options.minutes * 60, options.max_requests)
    seconds = time.monotonic() - began
    stop.set()
    await sampler
    end = server.worker_rss_kib()
    return seconds, {"start": start, "end": end, "peak": max(peak[0], end)}


def soak(options: Options, work: Path | None = None) -> dict[str, Any]:
    """Run one soak and return its summary (see the module docstring)."""
    work = work or Path(tempfile.mkdtemp(prefix="lkps-soak-"))
    limit = str(options.rate_limit_per_minute)
    extra = {"LKPS_RATE_LIMIT_PER_MINUTE": limit, "LKPS_USER_RATE_LIMIT_PER_MINUTE": limit}
    deployment = Deployment.create(work, options.db, options.postgres_url, extra_env=extra)
    try:
        with deployment.server() as server:
            load = Load(deployment, options, webhooks=webhook_endpoint_exists(server.url))
            seconds, rss = asyncio.run(drive(load, server))
        rows = asyncio.run(session_rows(deployment.database_url))
        return summarize(load, rows, seconds, rss)
    finally:
        if not options.keep:
            deployment.close()
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Options()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default=defaults.db)
    parser.add_argument("--postgres-url", default=defaults.postgres_url)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument(
        "--max-requests", type=int, default=defaults.max_requests, help="stop after this many"
    )
    parser.add_argument("--users", type=int, default=defaults.users, help="distinct user tokens")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds, help="seconds")
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=int, default=defaults.weights[kind], help=f"weight of {kind}")
    parser.add_argument("--rate-limit-per-minute", type=int, default=defaults.rate_limit_per_minute)
    parser.add_argument("--max-rss-growth-pct", type=float, default=defaults.max_rss_growth_pct)
    parser.add_argument("--keep", action="store_true", help="keep the work directory and database")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    options = Options(
        minutes=args.minutes,
        db=args.db,
        postgres_url=args.postgres_url,
        connections=args.connections,
        max_requests=args.max_requests,
        users=args.users,
        warmup_seconds=args.warmup,
        weights={kind: getattr(args, kind) for kind in KINDS},
        rate_limit_per_minute=args.rate_limit_per_minute,
        max_rss_growth_pct=args.max_rss_growth_pct,
        keep=args.keep,
    )
    summary = soak(options)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
