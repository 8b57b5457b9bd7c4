// Signing in with MSAL Browser (authorization code flow with PKCE) and getting an access token for lkps.
import { type AccountInfo, PublicClientApplication } from "@azure/msal-browser";

import type { AppConfig } from "./config";
import { Failure, signInFailed } from "./failures";

export class Auth {
  private constructor(
    private readonly msal: PublicClientApplication,
    private readonly scopes: string[],
    private readonly authority: string,
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
    try {
      const redirect = await msal.handleRedirectPromise(); // completes a sign-in that just came back
      if (redirect?.account) msal.setActiveAccount(redirect.account);
    } catch (error) {
      throw await signInFailed(config.authority, error);
    }
    return new Auth(msal, [config.scope], config.authority);
  }

  get account(): AccountInfo | null {
    return this.msal.getActiveAccount() ?? this.msal.getAllAccounts()[0] ?? null;
  }

  async signIn(): Promise<void> {
    try {
      await this.msal.loginRedirect({ scopes: this.scopes });
    } catch (error) {
      throw await signInFailed(this.authority, error);
    }
  }

  /** Forget the account in this browser and sign out at the authority, which sends the browser back here. */
  async signOut(): Promise<void> {
    const account = this.account;
    if (!account) return;
    try {
      await this.msal.logoutRedirect({ account, postLogoutRedirectUri: `${window.location.origin}/` });
    } catch (error) {
      throw await signInFailed(this.authority, error);
    }
  }

  /** An Entra access token for lkps, from MSAL's cache while it lasts. */
  async accessToken(): Promise<string> {
    const account = this.account;
    if (!account) throw new Failure("Not signed in.", "Sign in first.");
    try {
      return (await this.msal.acquireTokenSilent({ scopes: this.scopes, account })).accessToken;
    } catch (error) {
      throw await signInFailed(this.authority, error);
    }
  }
}
