// Drives the example in headless Chromium (Debian's /usr/bin/chromium through playwright-core): sign in,
// start a session both ways, join each room with a fake microphone (or wait for the failure the page
// shows), take a screenshot. Prints one JSON object: the account shown, the error shown if sign-in failed,
// and per panel the participant token, the connection state, the participants and the microphone's state
// shown, what lkps said of the agent, and the error shown; then keeps the page connected until its stdin closes, so that the caller can
// look at the rooms on the server meanwhile.
//   node e2e/sign-in.mjs <page url> <screenshot.png> <issuer SPKI sha256, base64, or - to trust nothing>
//                        <fresh user data dir> [--expect-agent: also wait for an agent's first message]
import { chromium } from "playwright-core";

const [url, screenshot, issuerSpki, userDataDir, expect] = process.argv.slice(2);
const expectAgent = expect === "--expect-agent";
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // A fake microphone and camera, allowed without a prompt: the page publishes real (synthetic) audio.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    // Trust exactly the dev issuer's certificate, as a person does by trusting .lkps-dev/ca.pem.
    ...(issuerSpki === "-" ? [] : [`--ignore-certificate-errors-spki-list=${issuerSpki}`]),
  ],
  viewport: { width: 1200, height: 760 },
});
const console_ = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => console_.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console_.push(`pageerror: ${error.message}`));
  await page.goto(url);
  const shownError = () => page.textContent("#error");
  // The click waits until the page enables the button, which it does once the button has its handler:
  // clicking as soon as the page has loaded would be lost while MSAL is still being set up.
  await page.click("#sign-in");
  // Off to the issuer's authorize endpoint and back with a code, which MSAL redeems; or a failure shown.
  await page.waitForSelector("#account[data-signed-in], #error:not(:empty)", { timeout: 30_000 });
  const panels = {};
  const signedIn = (await page.$("#account[data-signed-in]")) !== null;
  for (const [button, panel] of signedIn ? [
    ["#start-session-api", "#session-api"],
    ["#start-token-endpoint", "#token-endpoint"],
  ] : []) {
    await page.click(button);
    // Wait for an outcome: connected with the microphone settled, a failed connection, or the page
    // showing why there was no attempt.
    await page.waitForFunction(
      ([selector, agent]) => {
        if (document.querySelector("#error")?.textContent) return true;
        const text = (name) => document.querySelector(`${selector} [data-field="${name}"]`)?.textContent ?? "";
        const state = text("connection");
        const agentThere =
          text("messages") && text("participants").includes(", agent)") && text("agent status").includes("in the room");
        const settled = state === "connected" && text("microphone") && (!agent || agentThere);
        return state.startsWith("failed") || state === "disconnected" || settled;
      },
      [panel, expectAgent],
      { timeout: 60_000 },
    );
    panels[panel.slice(1)] = await page.$eval(panel, (element) => ({
      participantToken: element.dataset.participantToken ?? null,
      connection: element.querySelector('[data-field="connection"]')?.textContent ?? null,
      participants: element.querySelector('[data-field="participants"]')?.textContent ?? null,
      microphone: element.querySelector('[data-field="microphone"]')?.textContent ?? null,
      agentStatus: element.querySelector('[data-field="agent status"]')?.textContent ?? null,
      messages: [...(element.querySelector('[data-field="messages"]')?.children ?? [])].map((line) => line.textContent),
      error: document.querySelector("#error").textContent,
    }));
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const account = await page.textContent("#account");
  const error = signedIn ? "" : await shownError();
  console.log(JSON.stringify({ account, error, panels, console: console_ }));
  await new Promise((resolve) => {
    process.stdin.on("end", resolve).resume();
  });
} catch (error) {
  console.log(JSON.stringify({ failure: String(error), console: console_ }));
  process.exitCode = 1;
} finally {
  await context.close();
}
