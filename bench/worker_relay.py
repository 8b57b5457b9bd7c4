"""The worker relay under load: N concurrent LiveKit Agents worker connections held by one `lkps serve`
process (granian, one worker), the memory they cost, and the latency the relay adds to a job assignment.

LiveKit's `/agent` is the protocol-level fake of the test suite (tests/support/fake_livekit_agent.py) in
this process, and so are the N workers (raw protocol clients, each sending `update_worker` every 2.5 s as
a stock worker does). A job assignment is timed as LiveKit runs it, for a fresh session room each (its
session row written first, as session start does): from the fake LiveKit sending the availability
request, through the worker's acceptance, to the worker receiving the assignment; through lkps (which
looks the room up, rewrites the answer and the assignment) and over direct connections to the fake (the
baseline): the difference is what the relay adds, to the whole job and to each of its three hops (the
request, which carries the room check; the answer; the assignment frame alone). At the end the server gets
SIGTERM and the close codes the workers see are counted (1012 = service restart: reconnect elsewhere).

    python bench/worker_relay.py --connections 1000 --assignments 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from livekit.protocol import agent

from bench.harness import Deployment, Server, livekit_env
from gateway.persistence.db import create_engine
from tests.support.fake_livekit_agent import FakeAgentService, FakeWorkerLink
from tests.support.livekit import API_KEY, API_SECRET
from tests.support.sessions import insert_sessions, session_row
from tests.support.worker_protocol import register_frame, worker_jwt

UPDATE_INTERVAL_SECONDS = 2.5


def room(job: int) -> str:
    return f"bench-room-{job}"


def offer(agent_name: str, job: int) -> bytes:
    message = agent.ServerMessage()
    message.availability.job.id = f"AJ_{job}"
    message.availability.job.agent_name = agent_name
    message.availability.job.room.name = room(job)
    return message.SerializeToString()


def accept(job: int) -> bytes:
    """A stock worker's acceptance (livekit-agents 1.8 defaults)."""
    message = agent.WorkerMessage()
    message.availability.job_id = f"AJ_{job}"
    message.availability.available = True
    message.availability.participant_identity = f"agent-AJ_{job}"
    message.availability.participant_attributes["lk.agent.name"] = "bench"
    return message.SerializeToString()


def assignment(agent_name: str, job: int) -> bytes:
    message = agent.ServerMessage()
    message.assignment.job.id = f"AJ_{job}"
    message.assignment.job.agent_name = agent_name
    message.assignment.job.room.name = room(job)
    message.assignment.token = "x" * 600  # a LiveKit join token's size
    return message.SerializeToString()


async def write_sessions(database_url: str, agent_name: str, jobs: range) -> None:
    """The session rows of the jobs' rooms, as session start writes them before LiveKit can dispatch."""
    engine = create_engine(database_url, pool_size=1)
    try:
        await insert_sessions(engine, *(session_row(room(job), agent_app_id=agent_name) for job in jobs))
    finally:
        await engine.dispose()


async def open_worker(
    http: aiohttp.ClientSession, url: str, key: str, secret: str, agent_name: str, fake: FakeAgentService
) -> tuple[aiohttp.ClientWebSocketResponse, FakeWorkerLink]:
    headers = {"Authorization": f"Bearer {worker_jwt(key, secret)}"}
    ws = await http.ws_connect(url + "/agent", headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10))
    await ws.send_bytes(register_frame(agent_name))
    answer = await ws.receive(timeout=30)
    assert answer.type == aiohttp.WSMsgType.BINARY, answer
    link = await fake.links.get()
    await link.received.get()  # the register
    return ws, link


async def keep_updating(ws: aiohttp.ClientWebSocketResponse) -> None:
    update = agent.WorkerMessage()
    update.update_worker.load = 0.1
    frame = update.SerializeToString()
    await asyncio.sleep(random.uniform(0, UPDATE_INTERVAL_SECONDS))
    while not ws.closed:
        await ws.send_bytes(frame)
        await asyncio.sleep(UPDATE_INTERVAL_SECONDS)


async def next_server(ws: aiohttp.ClientWebSocketResponse, kind: str) -> None:
    while True:
        message = await ws.receive(timeout=10)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"the worker got {message.type!r} instead of {kind}")
        if agent.ServerMessage.FromString(message.data).HasField(kind):
            return


async def next_answer(link: FakeWorkerLink) -> None:
    while not agent.WorkerMessage.FromString(await asyncio.wait_for(link.received.get(), 10)).HasField(
        "availability"
    ):
        pass


@dataclass
class Timings:
    """Seconds per job: the whole job (availability request to the worker's receipt of the assignment) and
    its three relayed hops (the request, with the room check; the worker's answer; the assignment)."""

    jobs: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    answers: list[float] = field(default_factory=list)
    assignments: list[float] = field(default_factory=list)


async def time_assignments(
    pairs: list[tuple[aiohttp.ClientWebSocketResponse, FakeWorkerLink]],
    agent_name: str,
    jobs: range,
    rate: float,
) -> Timings:
    """Run `jobs` at `rate` per second on random workers."""
    timings = Timings()
    for job in jobs:
        ws, link = random.choice(pairs)
        started = time.perf_counter()
        await link.send(offer(agent_name, job))
        await next_server(ws, "availability")
        offered = time.perf_counter()
        await ws.send_bytes(accept(job))
        await next_answer(link)
        answered = time.perf_counter()
        await link.send(assignment(agent_name, job))
        await next_server(ws, "assignment")
        assigned = time.perf_counter()
        timings.jobs.append(assigned - started)
        timings.requests.append(offered - started)
        timings.answers.append(answered - offered)
        timings.assignments.append(assigned - answered)
        await asyncio.sleep(1 / rate)
    return timings


def quantiles_ms(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": round(cuts[49] * 1000, 3),
        "p99": round(cuts[98] * 1000, 3),
        "max": round(max(samples) * 1000, 3),
    }


async def run(
    server: Server, fake: FakeAgentService, livekit_url: str, database_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(
            "/api/agent/register", headers={"Authorization": f"Bearer {args.agent_token}"}, json={}
        )
    body = response.json()
    key, secret, name, url = (
        body["worker_api_key"],
        body["worker_api_secret"],
        body["agent_name"],
        body["worker_url"],
    )
    relayed_jobs, direct_jobs = range(args.assignments), range(args.assignments, 2 * args.assignments)
    await write_sessions(database_url, name, relayed_jobs)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        rss_before = server.worker_rss_kib()
        pairs = [await open_worker(http, url, key, secret, name, fake) for _ in range(args.connections)]
        updaters = [asyncio.ensure_future(keep_updating(ws)) for ws, _ in pairs]
        await asyncio.sleep(3)  # every worker has sent an update; the server settled
        # The bench client's own collector pauses (100 ms and more over 2,000 connections' objects) would
        # land in both timings at random: it keeps what it holds out of the collector and pauses it.
        gc.collect()
        gc.freeze()
        gc.disable()
        rss_held = server.worker_rss_kib()
        cpu_before, _ = server.worker_cpu_seconds()
        relayed = await time_assignments(pairs, name, relayed_jobs, args.rate)
        cpu_jobs = server.worker_cpu_seconds()[0] - cpu_before
        direct_pairs = [
            await open_worker(http, livekit_url, API_KEY, API_SECRET, name, fake) for _ in range(args.direct)
        ]
        direct = await time_assignments(direct_pairs, name, direct_jobs, args.rate)
        cpu_total, cpu_loop = server.worker_cpu_seconds()
        gc.enable()
        for task in updaters:
            task.cancel()
        stopping = time.perf_counter()
        server.process.send_signal(15)  # SIGTERM: the draining replica
        codes: Counter[str] = Counter()

        async def close_code(ws: aiohttp.ClientWebSocketResponse) -> None:
            while True:
                message = await ws.receive(timeout=40)
                if message.type in {
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                }:
                    codes[str(ws.close_code)] += 1
                    return

        await asyncio.gather(*(close_code(ws) for ws, _ in pairs), return_exceptions=True)
        drained_after = time.perf_counter() - stopping
    hops = {}
    for hop in ("jobs", "requests", "answers", "assignments"):
        through, alone = quantiles_ms(getattr(relayed, hop)), quantiles_ms(getattr(direct, hop))
        added = {k: round(through[k] - alone[k], 3) for k in ("p50", "p99")}
        hops[hop] = {"through_lkps": through, "direct": alone, "added": added}
    return {
        "connections": args.connections,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "worker_rss_kib": {"before": rss_before, "holding": rss_held},
        "kib_per_connection": round((rss_held - rss_before) / args.connections, 1),
        # ms: the whole job, and each relayed hop of it, through lkps and directly; what lkps adds.
        **hops,
        "worker_cpu_seconds": {"process": round(cpu_total, 2), "event_loop_thread": round(cpu_loop, 2)},
        # lkps's CPU while the relayed jobs ran (the workers' updates included), per job: load-independent.
        "cpu_ms_per_relayed_job": round(cpu_jobs * 1000 / len(relayed_jobs), 3),
        "sigterm": {"close_codes": dict(codes), "all_closed_after_s": round(drained_after, 2)},
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeAgentService()
    async with fake.running() as livekit_url:
        # All N workers run with the one agent's key: its cap and handshake budget allow them.
        env = livekit_env(
            livekit_url,
            API_KEY,
            API_SECRET,
            LKPS_LOG_LEVEL="warning",
            LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT=str(args.connections + args.direct),
            LKPS_WORKER_HANDSHAKES_PER_MINUTE=str(args.connections + args.direct),
        )
        with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
            deployment = await asyncio.to_thread(Deployment.create, Path(work), args.db, extra_env=env)
            try:
                args.agent_token = deployment.agent_token()
                with deployment.server() as server:
                    try:
                        return await run(server, fake, livekit_url, deployment.database_url, args)
                    except Exception:
                        log = Path(work) / f"serve-{server.port}.log"
                        print(log.read_text()[-3000:], file=sys.stderr)
                        raise
            finally:
                await asyncio.to_thread(deployment.close)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--assignments", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="assignments per second")
    parser.add_argument("--direct", type=int, default=50, help="direct baseline connections")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--work-dir", type=Path, help="where the server's work directory goes (deleted)")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
