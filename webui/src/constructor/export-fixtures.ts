// Prints the constructor's exports as JSON, for tests/unit/test_constructor_export.py, which
// runs it with vite-node and checks with Titan's own Python that the YAML, the Python file and
// the document build the same DAG. Not part of the app.
//
// - no argument: the sample drafts of fixtures.ts, {name: {yaml, python, files, document}};
// - a JSON file {name: {document, files}} (the master's parse answers): each read with
//   fromDocument, then exported the same way (and the draft itself under `draft`).
import { FIXTURES } from "./fixtures";
import { fromDocument, toDocument, toPython, toYaml } from "./model";
import type { Draft } from "./types";

declare const process: { argv: string[] };

function exports(draft: Draft) {
  const { document, files } = toDocument(draft);
  return { yaml: toYaml(draft), python: toPython(draft), files, document };
}

const out: Record<string, unknown> = {};
const input = process.argv[2];
if (input) {
  const fsName = "node:fs";
  const fs = (await import(/* @vite-ignore */ fsName)) as { readFileSync(path: string, encoding: string): string };
  const given = JSON.parse(fs.readFileSync(input, "utf-8")) as Record<string, { document: Record<string, unknown>; files?: Record<string, string> }>;
  for (const [name, { document, files }] of Object.entries(given)) {
    const draft = fromDocument(document, files ?? {});
    out[name] = { ...exports(draft), draft };
  }
} else {
  for (const [name, make] of Object.entries(FIXTURES)) out[name] = exports(make());
}
console.log(JSON.stringify(out));
