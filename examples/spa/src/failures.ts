// Every failure the page can meet, as one readable message: what failed, then what to do.

export class Failure extends Error {
  constructor(
    readonly what: string,
    readonly todo: string,
  ) {
    super(`${what} ${todo}`);
  }
}

/** The same origins `lkps dev` allows by default (the example's dev server, under both loopback names). */
const DEV_ORIGINS = "http://127.0.0.1:5173 and http://localhost:5173";

/** Whether anything answers at `url`: an opaque no-cors request succeeds whenever a server answers, so
 * CORS cannot make it fail; a server that is down, or a TLS certificate the browser refuses, does. */
async function answers(url: string): Promise<boolean> {
  try {
    await fetch(url, { mode: "no-cors", cache: "no-store" });
    return true;
  } catch {
    return false;
  }
}

/** fetch() to lkps threw: it is down, or it answered but the browser withheld the answer (CORS). */
export async function lkpsUnreachable(lkpsUrl: string): Promise<Failure> {
  const origin = window.location.origin;
  if (!(await answers(`${lkpsUrl}/api/health/live`))) {
    return new Failure(
      `lkps at ${lkpsUrl} cannot be reached.`,
      "Start it (scripts/dev), or fix lkpsUrl in config.json (npm run dev-config writes it).",
    );
  }
  return new Failure(
    `lkps at ${lkpsUrl} does not allow this page's origin ${origin} (CORS).`,
    `Open the page at an origin it allows (lkps dev allows ${DEV_ORIGINS} unless given --cors-origin), ` +
      `or restart lkps dev with --cors-origin ${origin} (in production: LKPS_CORS_ALLOWED_ORIGINS).`,
  );
}

/** An answer of lkps that is not a success: its error JSON carries an actionable message. */
export function lkpsRefused(status: number, text: string): Failure {
  try {
    const error = JSON.parse(text) as { error: string; message: string; request_id: string };
    return new Failure(
      `lkps refused the session (${status} ${error.error}): ${error.message}`,
      `(request id ${error.request_id})`,
    );
  } catch {
    return new Failure(`lkps answered ${status} without its error JSON.`, "Is lkpsUrl in config.json lkps?");
  }
}

/** MSAL could not sign in or get a token. Most often the authority cannot be reached from the browser:
 * `lkps dev`'s issuer speaks HTTPS with its own CA, which the browser must trust first. */
export async function signInFailed(authority: string, error: unknown): Promise<Failure> {
  const discovery = `${authority}/v2.0/.well-known/openid-configuration`;
  if (!(await answers(discovery))) {
    return new Failure(
      `The sign-in authority ${new URL(authority).origin} cannot be reached, or this browser does not trust its certificate.`,
      `If lkps dev is running, open ${discovery} once and accept its certificate, or import .lkps-dev/ca.pem ` +
        "as a trusted authority (see examples/spa/README.md), then sign in again.",
    );
  }
  const detail = error instanceof Error ? error.message : String(error);
  return new Failure(`Sign-in failed: ${detail}`, "Sign in again; if it persists, check authority and clientId in config.json.");
}

/** What to show for any error: a Failure as it is, anything else with its own message. */
export function readable(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
