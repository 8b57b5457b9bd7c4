// The two ways a browser app starts a session through lkps, and the LiveKit connection that follows.
import { Room, RoomEvent, TokenSource } from "livekit-client";

export interface Started {
  serverUrl: string;
  participantToken: string;
}

interface LkpsError {
  error: string;
  message: string;
  request_id: string;
}

/** lkps's own API: `POST /api/session/start` with the agent id and metadata. */
export async function startWithSessionApi(
  lkpsUrl: string,
  accessToken: string,
  agentId: string,
  metadata: Record<string, unknown>,
): Promise<Started> {
  const response = await fetch(`${lkpsUrl}/api/session/start`, {
    method: "POST",
    headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ agent_entra_app_id: agentId, metadata }),
  });
  const body = await response.json();
  if (!response.ok) {
    const error = body as LkpsError;
    throw new Error(`${response.status} ${error.error}: ${error.message} (request ${error.request_id})`);
  }
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
  return source.fetch({ agentName: agentId, agentMetadata: JSON.stringify(metadata), participantName });
}

/** What the page shows of a room as it changes. */
export interface RoomView {
  state(state: string): void;
  participants(names: string[]): void;
  microphone(state: string): void;
}

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
