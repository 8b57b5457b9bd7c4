// Fetches a LiveKit token through livekit-client's real TokenSource.endpoint, exactly as a browser app
// would: reads one JSON request ({url, authorization, options}) from stdin and prints one JSON answer,
// {"serverUrl", "participantToken"} or {"error"}.
import { TokenSource } from "livekit-client";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { url, authorization, options } = JSON.parse(input);

// A plain object, not a Headers instance: TokenSource spreads it, and a spread Headers is empty.
const source = TokenSource.endpoint(url, { headers: { Authorization: authorization } });
try {
  const { serverUrl, participantToken } = await source.fetch(options);
  console.log(JSON.stringify({ serverUrl, participantToken }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.message ?? err) }));
}
