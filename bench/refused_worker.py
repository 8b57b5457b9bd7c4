"""How often a refused stock LiveKit Agents worker comes back: an unmodified livekit-agents worker with one
agent's credentials declaring another agent's name, against `lkps serve` (LiveKit's `/agent` is the
suite's protocol-level fake: the refusal happens before anything reaches LiveKit). Counts the relay's
`agent_name_mismatch` refusals over the run.

    python bench/refused_worker.py --seconds 95 --hold 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Deployment, Server, livekit_env
from tests.support.fake_livekit_agent import FakeAgentService
from tests.support.livekit import API_KEY, API_SECRET

WORKER_APP = Path(__file__).resolve().parent.parent / "tests" / "relay" / "stock_worker.py"
MISMATCH = 'lkps_worker_refusals_total{reason="agent_name_mismatch"}'


async def refusals(server: Server) -> float:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(MISMATCH))


async def run(server: Server, agent_token: str, work: Path, seconds: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        body = (
            await http.post(
                "/api/agent/register", headers={"Authorization": f"Bearer {agent_token}"}, json={}
            )
        ).json()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LKPS_"))},
        "LIVEKIT_URL": body["worker_url"],
        "LIVEKIT_API_KEY": body["worker_api_key"],
        "LIVEKIT_API_SECRET": body["worker_api_secret"],
        "LIVEKIT_AGENT_NAME": str(uuid.uuid4()),  # not this agent's name
        "RELAY_TEST_JOBS": str(work / "jobs.txt"),
    }
    with (work / "worker.log").open("wb") as log:
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, str(WORKER_APP), "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while await refusals(server) == 0:  # noqa: ASYNC110 - polling the server; the worker starts slowly
            await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        count = await refusals(server)
        elapsed = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {"seconds": round(elapsed, 1), "attempts": count, "attempts_per_second": round(count / elapsed, 4)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeAgentService()
    async with fake.running() as livekit_url:
        env = livekit_env(livekit_url, API_KEY, API_SECRET, LKPS_WORKER_REFUSAL_HOLD_SECONDS=str(args.hold))
        with tempfile.TemporaryDirectory() as work:
            deployment = await asyncio.to_thread(Deployment.create, Path(work), extra_env=env)
            try:
                with deployment.server() as server:
                    result = await run(server, deployment.agent_token(), Path(work), args.seconds)
            finally:
                await asyncio.to_thread(deployment.close)
    return {"hold_seconds": args.hold, **result}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=95)
    parser.add_argument("--hold", type=float, default=30)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
