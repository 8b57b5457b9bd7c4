// Writes the example's config.json for a running `lkps dev`, from its state directory: lkps's URL, the
// embedded issuer, the demo SPA client, lkps's delegated scope and the demo agent.
//   node scripts/dev-config.mjs [state dir] [output, default dist/config.json]
// The state dir is found as every `lkps` command finds it: the argument, else $LKPS_DEV_STATE_DIR, else
// the repository's .lkps-dev (where scripts/dev keeps it).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const repositoryState = fileURLToPath(new URL("../../../.lkps-dev", import.meta.url));
const [stateDir = process.env.LKPS_DEV_STATE_DIR || repositoryState, output = "dist/config.json"] =
  process.argv.slice(2);
const read = (name) => {
  try {
    return readFileSync(`${stateDir}/${name}`, "utf8").trim();
  } catch {
    console.error(`no \`lkps dev\` state in ${stateDir}: start scripts/dev first, or pass its state directory`);
    process.exit(6);
  }
};
const identity = JSON.parse(read("identity.json"));
// "demo agent" is how `lkps dev` describes its demo agent in identity.json.
const agent = Object.values(identity.clients).find((client) => client.description === "demo agent");

const config = {
  lkpsUrl: read("url"),
  authority: `${read("authority")}/${identity.tenant_id}`,
  clientId: identity.spa_client_id,
  scope: `${identity.api_uri}/${identity.user_scope}`,
  agentId: agent.client_id,
};
mkdirSync(dirname(output), { recursive: true });
writeFileSync(output, `${JSON.stringify(config, null, 2)}\n`);
console.log(`wrote ${output} for lkps at ${config.lkpsUrl}`);
