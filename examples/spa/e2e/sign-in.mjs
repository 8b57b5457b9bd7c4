// Drives the example in headless Chromium (Debian's /usr/bin/chromium through playwright-core): sign in,
// start a session both ways, join each room with a fake microphone, take a screenshot of the connected
// page. Prints one JSON object: the account shown, and per panel the participant token, the connection
// state, the participants shown and the microphone's state; then keeps the page connected until its
// stdin closes, so that the caller can look at the rooms on the server meanwhile.
//   node e2e/sign-in.mjs <page url> <screenshot.png> <issuer SPKI sha256, base64> <fresh user data dir>
import { chromium } from "playwright-core";

const [url, screenshot, issuerSpki, userDataDir] = process.argv.slice(2);
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
    `--ignore-certificate-errors-spki-list=${issuerSpki}`,
  ],
  viewport: { width: 1200, height: 760 },
});
const console_ = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => console_.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console_.push(`pageerror: ${error.message}`));
  await page.goto(url);
  await page.click("#sign-in");
  // Off to the issuer's authorize endpoint and back with a code, which MSAL redeems.
  await page.waitForSelector("#account[data-signed-in]", { timeout: 30_000 });
  const panels = {};
  for (const [button, panel] of [
    ["#start-session-api", "#session-api"],
    ["#start-token-endpoint", "#token-endpoint"],
  ]) {
    await page.click(button);
    await page.waitForSelector(`${panel}[data-participant-token]`, { timeout: 30_000 });
    // Wait for an outcome: connected with the microphone settled, or a failure.
    await page.waitForFunction(
      (selector) => {
        const text = (name) => document.querySelector(`${selector} [data-field="${name}"]`)?.textContent ?? "";
        const state = text("connection");
        return state.startsWith("failed") || state === "disconnected" || (state === "connected" && text("microphone"));
      },
      panel,
      { timeout: 60_000 },
    );
    panels[panel.slice(1)] = await page.$eval(panel, (element) => ({
      participantToken: element.dataset.participantToken,
      connection: element.querySelector('[data-field="connection"]').textContent,
      participants: element.querySelector('[data-field="participants"]').textContent,
      microphone: element.querySelector('[data-field="microphone"]').textContent,
    }));
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const account = await page.textContent("#account");
  const error = await page.textContent("#error");
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
