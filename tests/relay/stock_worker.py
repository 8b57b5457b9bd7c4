"""An ordinary LiveKit Agents 1.8 application, run as `python stock_worker.py start`: the worker is the PyPI
package's, unmodified, configured only by LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET and
LIVEKIT_AGENT_NAME. Its job joins the room, greets over a data message, appends the room name to the
file named by RELAY_TEST_JOBS (how the test sees which jobs it got) and stays until the user leaves."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from livekit.agents import AgentServer, JobContext, JobExecutorType, cli

# The test machine's CPU is shared and busy; LiveKit dispatches only to workers reporting a load below 1, so
# this worker reports none (an agent's own choice of load function, not a change to the worker).
server = AgentServer(
    job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0, load_fnc=lambda: 0.0
)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    user_left = asyncio.Event()
    ctx.room.on("participant_disconnected", lambda _: user_left.set())
    await ctx.connect()
    await ctx.room.local_participant.publish_data(b"hello from the agent", topic="greeting")
    await asyncio.to_thread(_record_job, ctx.room.name)
    await user_left.wait()  # stay in the room while the user is there


def _record_job(room: str) -> None:
    with Path(os.environ["RELAY_TEST_JOBS"]).open("a", encoding="utf-8") as jobs:
        jobs.write(room + "\n")


if __name__ == "__main__":
    cli.run_app(server)
