"""The lkps Litestar application: routes, errors, LiveKit token minting, persistence, CLI, observability."""
