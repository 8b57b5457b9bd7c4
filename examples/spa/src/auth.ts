// Signing in with MSAL Browser (authorization code flow with PKCE) and getting an access token for lkps.
import { type AccountInfo, PublicClientApplication } from "@azure/msal-browser";

import type { AppConfig } from "./config";

export class Auth {
  private constructor(
    private readonly msal: PublicClientApplication,
    private readonly scopes: string[],
  ) {}

  static async create(config: AppConfig): Promise<Auth> {
    const msal = new PublicClientApplication({
      auth: {
        clientId: config.clientId,
        authority: config.authority,
        // The authority's host is trusted as configured, which is how MSAL accepts `lkps dev`'s issuer.
        knownAuthorities: [new URL(config.authority).host],
        redirectUri: `${window.location.origin}/`,
      },
      cache: { cacheLocation: "sessionStorage" },
    });
    await msal.initialize();
    const redirect = await msal.handleRedirectPromise(); // completes a sign-in that just came back
    if (redirect?.account) msal.setActiveAccount(redirect.account);
    return new Auth(msal, [config.scope]);
  }

  get account(): AccountInfo | null {
    return this.msal.getActiveAccount() ?? this.msal.getAllAccounts()[0] ?? null;
  }

  signIn(): Promise<void> {
    return this.msal.loginRedirect({ scopes: this.scopes });
  }

  /** An Entra access token for lkps, from MSAL's cache while it lasts. */
  async accessToken(): Promise<string> {
    const account = this.account;
    if (!account) throw new Error("Sign in first.");
    return (await this.msal.acquireTokenSilent({ scopes: this.scopes, account })).accessToken;
  }
}
