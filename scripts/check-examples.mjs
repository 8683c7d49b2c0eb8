// Each file of examples/ starts with `// packages/<name>/README.md, ts/js code block <n>:` and
// then holds that README code block verbatim. Fails (exit 1) when a file and its block differ,
// so the README shows the code that scripts/consumer-check.sh runs.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
let drifted = 0;
for (const file of readdirSync(join(root, "examples")).sort()) {
  const text = readFileSync(join(root, "examples", file), "utf8");
  const head = /^\/\/ (packages\/[^/]+\/README\.md), ts\/js code block (\d+):/.exec(text);
  if (!head) {
    console.error(`examples/${file}: no "// packages/<name>/README.md, ts/js code block <n>:" header`);
    drifted++;
    continue;
  }
  const body = text.split("\n").slice(2).join("\n");
  const md = readFileSync(join(root, head[1]), "utf8");
  const blocks = [...md.matchAll(/^```(?:ts|js)\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  const block = blocks[Number(head[2]) - 1];
  if (block !== body) {
    console.error(`examples/${file} differs from ${head[1]} ts/js code block ${head[2]}`);
    drifted++;
  }
}
process.exit(drifted ? 1 : 0);
