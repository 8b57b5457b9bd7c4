// Writes the example's config.json for a running `lkps dev`, from its state directory (the files documented in
// docs/agents/dev-mode.md): lkps's URL, the embedded issuer, the demo SPA client, lkps's delegated scope and
// an agent, the demo agent unless --agent names one of `lkps dev agent list`.
//   node scripts/dev-config.mjs [--agent NAME] [state dir] [output, default dist/config.json]
// The state dir is found as every `lkps` command finds it: the argument, else $LKPS_DEV_STATE_DIR, else
// the repository's .lkps-dev (where scripts/dev keeps it).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const repositoryState = fileURLToPath(new URL("../../../.lkps-dev", import.meta.url));
const args = process.argv.slice(2);
const agentFlag = args.indexOf("--agent");
const agentName = agentFlag === -1 ? "demo" : args.splice(agentFlag, 2)[1];
const [stateDir = process.env.LKPS_DEV_STATE_DIR || repositoryState, output = "dist/config.json"] = args;
const read = (name) => {
  try {
    return readFileSync(`${stateDir}/${name}`, "utf8").trim();
  } catch {
    console.error(`no \`lkps dev\` state in ${stateDir}: start scripts/dev first, or pass its state directory`);
    process.exit(6);
  }
};
const identity = JSON.parse(read("identity.json"));
// An agent's application has its name in `agent`; a state from before names has only the demo agent's
// description.
const clients = Object.values(identity.clients);
const agent =
  clients.find((client) => client.agent === agentName) ??
  (agentName === "demo" ? clients.find((client) => client.description === "demo agent") : undefined);
if (!agent) {
  console.error(`no agent ${agentName} in ${stateDir}: add it with \`lkps dev agent add ${agentName}\``);
  process.exit(6);
}

const config = {
  lkpsUrl: read("url"),
  authority: `${read("authority")}/${identity.tenant_id}`,
  clientId: identity.spa_client_id,
  scope: `${identity.api_uri}/${identity.user_scope}`,
  agentId: agent.client_id,
};
mkdirSync(dirname(output), { recursive: true });
writeFileSync(output, `${JSON.stringify(config, null, 2)}\n`);
console.log(`wrote ${output} for lkps at ${config.lkpsUrl}, agent ${agentName} (${agent.client_id})`);
