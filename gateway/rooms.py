"""Room names: `<user id>-<agent app id>-<unix ms>-<8 hex>`, one fresh room per session.

A fresh room matters because LiveKit applies `roomConfig` (limits, agent dispatch) only on the join
that creates the room; a reused name would silently drop both.
"""

from __future__ import annotations


def room_name(user_id: str, agent_app_id: str, unix_ms: int, random_hex: str) -> str:
    # user_id is already restricted to [A-Za-z0-9._-] by the validator, so the name needs no escaping.
    return f"{user_id}-{agent_app_id}-{unix_ms}-{random_hex}"
