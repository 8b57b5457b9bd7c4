// The two ways a browser app starts a session through lkps, and the LiveKit connection that follows.
import { Room, RoomEvent, TokenSource } from "livekit-client";

import { lkpsRefused, lkpsUnreachable } from "./failures";

export interface Started {
  serverUrl: string;
  participantToken: string;
}

/** lkps's own API: `POST /api/session/start` with the agent id and metadata. */
export async function startWithSessionApi(
  lkpsUrl: string,
  accessToken: string,
  agentId: string,
  metadata: Record<string, unknown>,
): Promise<Started> {
  let response: Response;
  try {
    response = await fetch(`${lkpsUrl}/api/session/start`, {
      method: "POST",
      headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ agent_entra_app_id: agentId, metadata }),
    });
  } catch {
    throw await lkpsUnreachable(lkpsUrl);
  }
  const text = await response.text();
  if (!response.ok) throw lkpsRefused(response.status, text);
  const body = JSON.parse(text);
  return { serverUrl: body.livekit_url, participantToken: body.participant_token };
}

/** LiveKit's standard token endpoint format, through livekit-client's own TokenSource. */
export async function startWithTokenSource(
  lkpsUrl: string,
  accessToken: string,
  agentId: string,
  metadata: Record<string, unknown>,
  participantName: string,
): Promise<Started> {
  // Headers as a plain object: TokenSource spreads them, and a spread `Headers` instance is empty.
  const source = TokenSource.endpoint(`${lkpsUrl}/api/livekit/token`, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  try {
    return await source.fetch({ agentName: agentId, agentMetadata: JSON.stringify(metadata), participantName });
  } catch (error) {
    if (error instanceof TypeError) throw await lkpsUnreachable(lkpsUrl); // fetch() itself failed
    // livekit-client reports a refusal as "...: received <status> / <body>".
    const refusal = /received (\d+) \/ (.*)$/s.exec(error instanceof Error ? error.message : "");
    if (refusal) throw lkpsRefused(Number(refusal[1]), refusal[2]);
    throw error;
  }
}

/** Join the room; `onState` sees every connection state, and the failure if there is one. */
export async function connect(started: Started, onState: (state: string) => void): Promise<Room> {
  const room = new Room();
  room.on(RoomEvent.ConnectionStateChanged, (state) => onState(state));
  try {
    await room.connect(started.serverUrl, started.participantToken);
  } catch (error) {
    onState(`failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return room;
}
