// Verifies LiveKit tokens with the official Node server SDK: one JSON request per stdin line
// ({"token", "key", "secret"}), one JSON answer per stdout line ({"claims"} or {"error"}).
import { createInterface } from "node:readline";
import { TokenVerifier } from "livekit-server-sdk";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { token, key, secret } = JSON.parse(line);
  try {
    const claims = await new TokenVerifier(key, secret).verify(token);
    console.log(JSON.stringify({ claims }));
  } catch (err) {
    console.log(JSON.stringify({ error: String(err?.code ?? err) }));
  }
}
