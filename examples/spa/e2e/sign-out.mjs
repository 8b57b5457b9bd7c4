// Drives the example in headless Chromium: sign in, then sign out. Prints one JSON object: which of the
// Sign in / Sign out buttons are visible while signed in, and the account line and buttons after signing
// out (back from the authority's logout).
//   node e2e/sign-out.mjs <page url> <issuer SPKI sha256, base64> <fresh user data dir>
import { chromium } from "playwright-core";

const [url, issuerSpki, userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", `--ignore-certificate-errors-spki-list=${issuerSpki}`],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const buttons = async () => ({
    signIn: await page.isVisible("#sign-in"),
    signOut: await page.isVisible("#sign-out"),
  });
  await page.goto(url);
  await page.click("#sign-in");
  await page.waitForSelector("#account[data-signed-in], #error:not(:empty)", { timeout: 30_000 });
  const signedIn = { account: await page.textContent("#account"), ...(await buttons()) };
  await page.click("#sign-out");
  // Off to the authority's logout endpoint, which sends the browser back to the page, signed out.
  await page.waitForURL(url, { waitUntil: "load", timeout: 30_000 });
  await page.waitForSelector("#sign-in:visible", { timeout: 30_000 });
  const signedOut = { account: await page.textContent("#account"), ...(await buttons()) };
  console.log(JSON.stringify({ signedIn, signedOut, error: await page.textContent("#error") }));
} catch (error) {
  console.log(JSON.stringify({ failure: String(error) }));
  process.exitCode = 1;
} finally {
  await context.close();
}
