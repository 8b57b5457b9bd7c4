// The page: sign in, start a session either way, show what the participant token grants, connect.
import { Auth } from "./auth";
import { loadConfig } from "./config";
import { readable } from "./failures";
import {
  AGENT_STATES,
  type RoomView,
  type Started,
  agentState,
  connect,
  startWithSessionApi,
  startWithTokenSource,
} from "./lkps";

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const metadata = { language: "en", source: "lkps browser example" };
const AGENT_POLL_MS = 2000;

/** The claims a participant token carries (decoded for display only: LiveKit verifies it). */
function claims(token: string): Record<string, any> {
  const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload));
}

function show(panel: HTMLElement, started: Started): RoomView {
  const granted = claims(started.participantToken);
  const rows: [string, string][] = [
    ["server url", started.serverUrl],
    ["identity", granted.sub],
    ["name", granted.name],
    ["room", granted.video?.room],
    ["agent", granted.roomConfig?.agents?.[0]?.agentName],
    ["agent status", AGENT_STATES.waiting],
    ["expires", new Date(granted.exp * 1000).toLocaleTimeString()],
    ["token", `${started.participantToken.slice(0, 24)}…`],
    ["connection", "connecting"],
    ["participants", ""],
    ["microphone", ""],
    ["messages", ""],
  ];
  const list = panel.querySelector("dl")!;
  list.replaceChildren(
    ...rows.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value ?? "";
      dd.dataset.field = term;
      return [dt, dd];
    }),
  );
  panel.dataset.participantToken = started.participantToken;
  const field = (name: string) => list.querySelector<HTMLElement>(`[data-field="${name}"]`)!;
  return {
    state: (state) => {
      field("connection").textContent = state;
    },
    participants: (names) => {
      field("participants").textContent = names.join("; ");
    },
    microphone: (state) => {
      field("microphone").textContent = state;
    },
    message: (from, text) => {
      const line = document.createElement("div");
      line.textContent = `${from}: ${text}`;
      field("messages").append(line);
    },
    agent: (state) => {
      field("agent status").textContent = AGENT_STATES[state] ?? state;
    },
  };
}

/** Ask lkps how the session's agent stands until it is in the room, unavailable or the session ended. */
async function followAgent(lkpsUrl: string, auth: Auth, room: string, view: RoomView): Promise<void> {
  for (;;) {
    const state = await agentState(lkpsUrl, await auth.accessToken(), room);
    view.agent(state);
    if (state !== "waiting" && state !== "lost") return;
    await new Promise((resolve) => setTimeout(resolve, AGENT_POLL_MS));
  }
}

async function main(): Promise<void> {
  const config = await loadConfig();
  const auth = await Auth.create(config);
  const account = auth.account;
  $("#sign-in").onclick = () => {
    $("#error").textContent = "";
    auth.signIn().catch(fail);
  };
  $("#sign-out").onclick = () => {
    $("#error").textContent = "";
    auth.signOut().catch(fail);
  };
  // The button is disabled in the page until here: a click before it has a handler would be lost.
  $<HTMLButtonElement>("#sign-in").disabled = false;
  if (account) {
    $("#account").textContent = `Signed in as ${account.name} (${account.username}).`;
    $("#account").dataset.signedIn = "true";
    // One account at a time: signed in, the way out replaces the way in.
    $("#sign-in").hidden = true;
    $("#sign-out").hidden = false;
  }
  const run = (button: string, panel: string, start: (token: string) => Promise<Started>) => {
    $<HTMLButtonElement>(button).disabled = !account;
    $(button).onclick = async () => {
      $("#error").textContent = "";
      try {
        const started = await start(await auth.accessToken());
        const view = show($(panel), started);
        await connect(started, view);
        await followAgent(config.lkpsUrl, auth, claims(started.participantToken).video.room, view);
      } catch (error) {
        fail(error);
      }
    };
  };
  run("#start-session-api", "#session-api", (token) =>
    startWithSessionApi(config.lkpsUrl, token, config.agentId, metadata),
  );
  run("#start-token-endpoint", "#token-endpoint", (token) =>
    startWithTokenSource(config.lkpsUrl, token, config.agentId, metadata, account?.name ?? "Guest"),
  );
}

/** Every failure ends here, shown on the page (what failed, what to do), never only in the console. */
function fail(error: unknown): void {
  $("#error").textContent = readable(error);
}

main().catch(fail);
