// Where lkps, the Entra tenant and the agent are: read at run time from config.json next to the page,
// so one build serves every environment (`npm run dev-config` writes it for `lkps dev`).
import { Failure } from "./failures";

export interface AppConfig {
  lkpsUrl: string; // lkps base URL, e.g. https://lkps.example.com
  authority: string; // https://login.microsoftonline.com/<tenant id>
  clientId: string; // this SPA's app registration
  scope: string; // lkps's delegated scope, e.g. api://lkps/access_as_user
  agentId: string; // the agent's Entra application (client) id
}

export async function loadConfig(): Promise<AppConfig> {
  const response = await fetch("./config.json", { cache: "no-store" });
  if (!response.ok) {
    throw new Failure(`config.json next to the page: HTTP ${response.status}.`, "Write it: npm run dev-config.");
  }
  return (await response.json()) as AppConfig;
}
