"""The LiveKit Agents worker relay: lkps speaks LiveKit's worker protocol to stock workers and relays it to
LiveKit, each worker bound to its own agent name (see docs/livekit-agents-worker.md for why)."""
