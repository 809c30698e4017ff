// Prints the fixtures' exports as JSON ({name: {yaml, python, files, document}}), for
// tests/unit/test_constructor_export.py, which runs it with vite-node and checks with Titan's own
// Python that the YAML and the Python file build the same DAG. Not part of the app.
import { FIXTURES } from "./fixtures";
import { toDocument, toPython, toYaml } from "./model";

const out: Record<string, unknown> = {};
for (const [name, make] of Object.entries(FIXTURES)) {
  const draft = make();
  const { document, files } = toDocument(draft);
  out[name] = { yaml: toYaml(draft), python: toPython(draft), files, document };
}
console.log(JSON.stringify(out));
