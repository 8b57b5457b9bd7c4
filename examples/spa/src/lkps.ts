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

/** `GET /api/session/{room}`: how the caller's session and its agent stand (waiting, joined, lost,
 * unavailable). */
export async function agentState(lkpsUrl: string, accessToken: string, room: string): Promise<string> {
  const response = await fetch(`${lkpsUrl}/api/session/${encodeURIComponent(room)}`, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  const text = await response.text();
  if (!response.ok) throw lkpsRefused(response.status, text);
  const body = JSON.parse(text);
  return body.status === "ended" ? "ended" : body.agent.state;
}

/** What the page says for each agent state. */
export const AGENT_STATES: Record<string, string> = {
  waiting: "the agent is joining",
  lost: "the agent is joining",
  joined: "the agent is in the room",
  unavailable: "the agent is unavailable, try again later",
  ended: "the session has ended",
};

/** What the page shows of a room as it changes. */
export interface RoomView {
  state(state: string): void;
  participants(names: string[]): void;
  microphone(state: string): void;
  message(from: string, text: string): void;
  agent(state: string): void;
}

/** The topic of chat text, livekit-client's and LiveKit Agents' (the demo agent greets on it). */
export const CHAT_TOPIC = "lk.chat";

/** Join the room with the microphone on (a fake device in the end-to-end test); `view` sees the
 * connection state, who is in the room (the agent too, once it joins), and the failure if there is one. */
export async function connect(started: Started, view: RoomView): Promise<Room> {
  const room = new Room();
  const participants = () => {
    const local = room.localParticipant;
    const remote = [...room.remoteParticipants.values()].map(
      (p) => `${p.name || p.identity} (${p.identity}${p.isAgent ? ", agent" : ""})`,
    );
    view.participants([`${local.name || local.identity} (${local.identity}, you)`, ...remote]);
  };
  room.on(RoomEvent.ConnectionStateChanged, (state) => view.state(state));
  room.on(RoomEvent.ParticipantConnected, participants);
  room.on(RoomEvent.ParticipantDisconnected, participants);
  room.registerTextStreamHandler(CHAT_TOPIC, async (reader, sender) => {
    view.message(sender.identity, await reader.readAll());
  });
  try {
    await room.connect(started.serverUrl, started.participantToken);
  } catch (error) {
    view.state(`failed: ${error instanceof Error ? error.message : String(error)}`);
    return room;
  }
  participants();
  try {
    await room.localParticipant.setMicrophoneEnabled(true);
    view.microphone("published");
  } catch (error) {
    view.microphone(`not published: ${error instanceof Error ? error.message : String(error)}`);
  }
  return room;
}
