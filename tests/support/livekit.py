"""The two official LiveKit token verifiers: Python `livekit-api` and Node `livekit-server-sdk`."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from livekit import api

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
API_KEY = "APItestkey"
API_SECRET = "test-secret-that-is-at-least-32-characters-long"


def verify_python(token: str, key: str = API_KEY, secret: str = API_SECRET) -> api.access_token.Claims:
    return api.TokenVerifier(key, secret, leeway=timedelta(seconds=0)).verify(token)


def verify_node(tokens: list[str], key: str = API_KEY, secret: str = API_SECRET) -> list[dict[str, Any]]:
    """Verify with the Node SDK in one process; each answer is {"claims": ...} or {"error": code}."""
    return run_node_script("verify-token.mjs", [{"token": t, "key": key, "secret": secret} for t in tokens])


def run_node_script(script: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one of tests/node's scripts: a JSON request per stdin line, a JSON answer per stdout line."""
    node = shutil.which("node")
    assert node, "node is required for the official LiveKit JS SDK"
    assert (NODE_DIR / "node_modules" / "livekit-server-sdk").is_dir(), "run: npm ci --prefix tests/node"
    result = subprocess.run(
        [node, str(NODE_DIR / script)],
        input="".join(json.dumps(request) + "\n" for request in requests),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]
