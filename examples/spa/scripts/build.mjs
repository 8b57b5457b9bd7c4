// Bundles the SPA with esbuild (every dependency comes from node_modules, nothing from a CDN) into an
// output directory next to index.html. With `--serve host:port` it also serves that directory.
//   node scripts/build.mjs [--outdir dist] [--serve 127.0.0.1:5173]
import { copyFile, mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as esbuild from "esbuild";

const { values } = parseArgs({
  options: { outdir: { type: "string", default: "dist" }, serve: { type: "string" } },
});
const source = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const outdir = resolve(values.outdir);

await mkdir(outdir, { recursive: true });
await copyFile(source("index.html"), join(outdir, "index.html"));
const options = {
  entryPoints: [source("src/main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: join(outdir, "app.js"),
  logLevel: "warning",
};
if (values.serve) {
  const [host, port] = values.serve.split(":");
  const context = await esbuild.context(options);
  await context.serve({ host, port: Number(port), servedir: outdir });
  console.log(`lkps browser example: http://${host}:${port}/`);
} else {
  await esbuild.build(options);
}
