"""An ordinary LiveKit Agents 1.8 application, run as `python stock_worker.py start`: the worker is the PyPI
package's, unmodified, configured only by LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET and
LIVEKIT_AGENT_NAME. Its job joins the room, greets over a data message and appends the room name to the
file named by RELAY_TEST_JOBS (how the test sees which jobs it got)."""

from __future__ import annotations

import os
from pathlib import Path

from livekit.agents import AgentServer, JobContext, JobExecutorType, cli

# The test machine is busy: a worker over its load threshold is not dispatched to, so it never counts as full.
server = AgentServer(
    job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0, load_threshold=float("inf")
)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.room.local_participant.publish_data(b"hello from the agent", topic="greeting")
    with Path(os.environ["RELAY_TEST_JOBS"]).open("a", encoding="utf-8") as jobs:
        jobs.write(ctx.room.name + "\n")


if __name__ == "__main__":
    cli.run_app(server)
