// Verifies LiveKit webhooks with the official Node server SDK: one JSON request per stdin line
// ({"body", "authorization", "key", "secret"}), one JSON answer per stdout line ({"event"} or {"error"}).
import { createInterface } from "node:readline";
import { WebhookReceiver } from "livekit-server-sdk";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { body, authorization, key, secret } = JSON.parse(line);
  try {
    const event = await new WebhookReceiver(key, secret).receive(body, authorization);
    console.log(JSON.stringify({ event: event.toJson() }));
  } catch (err) {
    console.log(JSON.stringify({ error: String(err?.code ?? err?.message ?? err) }));
  }
}
