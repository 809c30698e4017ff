// Unit tests of the constructor's model (model.ts): `cd webui && npx vitest run`.
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { diamond, extras, tricky } from "./fixtures";
import {
  History, checkLocal, cyclePath, durationSeconds, emptyDraft, envMap, findCycle, freshId, fromDocument,
  layout, model, NODE_H, NODE_W, pasteSteps, pyStr, shJoin, shlexSplit, stepOrder, toDocument, toPython,
  toYaml, wouldCycle,
} from "./model";
import type { Draft, Edge, Step, StepData } from "./types";

function step(data: StepData, x = 0, y = 0): Step {
  return { data, position: { x, y } };
}

function draftOf(steps: StepData[], edges: [string, string][] = [], name = "p"): Draft {
  return { name, steps: steps.map((d) => step(d)), edges: edges.map(([source, target]) => ({ source, target })) };
}

function job(id: string, more: Partial<StepData> = {}): StepData {
  return { id, kind: "job", command: `echo ${id}`, ...more };
}

/** The one job entry of a one-step draft's document. */
function entry(data: StepData): Record<string, unknown> {
  const jobs = toDocument(draftOf([data])).document.jobs as Record<string, unknown>[];
  expect(jobs).toHaveLength(1);
  return jobs[0];
}

/** The same draft read back from its YAML, without positions. */
function roundTrip(draft: Draft): { steps: StepData[]; edges: Edge[]; top: Record<string, unknown> } {
  const { files } = toDocument(draft);
  const back = fromDocument(parse(toYaml(draft)), files);
  const { steps: _s, edges: _e, ...top } = back;
  return { steps: back.steps.map((s) => s.data), edges: back.edges, top };
}

function sortEdges(edges: Edge[]): string[] {
  return edges.map((e) => `${e.source}->${e.target}`).sort();
}

const diamondEdges: [string, string][] = [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]];

// ------------------------------------------------------------------------------------------
describe("toDocument: each kind and key", () => {
  test("a job: command as typed, empty fields left out", () => {
    expect(entry(job("build", { command: "  make -j4 dist ", tags: "", retries: "  ", env: "" }))).toEqual({
      id: "build", command: "make -j4 dist",
    });
  });

  test("numbers stay numbers: priority, retries; durations of digits are seconds", () => {
    const e = entry(job("a", { priority: "-3", retries: "2", timeout: "90", delay: "1.5" }));
    expect(e.priority).toBe(-3);
    expect(e.retries).toBe(2);
    expect(e.timeout).toBe(90);
    expect(e.delay).toBe(1.5);
  });

  test("durations with units stay text; bad numbers are left for the master to refuse", () => {
    const e = entry(job("a", { timeout: "1h30m", delay: "500ms", retries: "two", priority: "1.5" }));
    expect(e.timeout).toBe("1h30m");
    expect(e.delay).toBe("500ms");
    expect(e.retries).toBe("two");
    expect(e.priority).toBe("1.5");
  });

  test("tags: a comma-separated field becomes a list, trimmed, without repeats", () => {
    expect(entry(job("a", { tags: " GPU, HIGH_MEM,,GPU " })).tags).toEqual(["GPU", "HIGH_MEM"]);
  });

  test("env: NAME=VALUE lines become a mapping of strings", () => {
    expect(entry(job("a", { env: "A=1\n\nB=x=y\r\nEMPTY=\nC= spaced " })).env).toEqual({
      A: "1", B: "x=y", EMPTY: "", C: " spaced ",
    });
  });

  test("cwd and affinity; affinity true/false are booleans", () => {
    const e = entry(job("a", { cwd: "/srv/app", affinity: "strict:parent" }));
    expect(e.cwd).toBe("/srv/app");
    expect(e.affinity).toBe("strict:parent");
    expect(entry(job("a", { affinity: "false" })).affinity).toBe(false);
    expect(entry(job("a", { affinity: "true" })).affinity).toBe(true);
  });

  test("a script: file and args, its content in files", () => {
    const d = draftOf([{ id: "load", kind: "script", file: "load.py", content: "print(1)\n", args: "--fast" }]);
    const { document, files } = toDocument(d);
    expect((document.jobs as unknown[])[0]).toEqual({ id: "load", file: "load.py", args: "--fast" });
    expect(files).toEqual({ "load.py": "print(1)\n" });
    expect(document.project).toBe(false);
  });

  test("a script never writes command; a job never writes file", () => {
    expect(entry({ id: "s", kind: "script", file: "x.sh", command: "echo" })).toEqual({ id: "s", file: "x.sh" });
    expect(entry({ id: "j", kind: "job", command: "echo", file: "x.sh", args: "-v" })).toEqual({ id: "j", command: "echo" });
  });

  test("two different scripts of one name: the second ships as ID/NAME", () => {
    const d = draftOf([{ id: "a", kind: "script", file: "x.py", content: "1" }, { id: "b", kind: "script", file: "x.py", content: "2" }, { id: "c", kind: "script", file: "x.py", content: "1" }]);
    const { document, files } = toDocument(d);
    expect((document.jobs as Record<string, unknown>[]).map((j) => j.file)).toEqual(["x.py", "b/x.py", "x.py"]);
    expect(files).toEqual({ "x.py": "1", "b/x.py": "2" });
  });

  test("a script in a folder (as the master gives it): the path in YAML, its base name in Python", () => {
    const d = fromDocument({ name: "p", jobs: [{ id: "load", file: "scripts/load.py", args: ["-v"] }] }, { "scripts/load.py": "print(1)" });
    expect(d.steps[0].data).toMatchObject({ file: "scripts/load.py", content: "print(1)" });
    expect(toDocument(d).files).toEqual({ "scripts/load.py": "print(1)" });
    expect(toPython(d)).toContain('p.script("load", "load.py", "print(1)", args=["-v"])');
  });

  test("no scripts: no files and no project key", () => {
    const { document, files } = toDocument(draftOf([job("a")]));
    expect(files).toEqual({});
    expect("project" in document).toBe(false);
  });

  test("a service: type, command, port as a number or auto, health, restart, persist", () => {
    const e = entry({ id: "api", kind: "service", command: "serve {port}", port: "8080", health: "http:/ready", restart: "always", persist: true });
    expect(e).toEqual({ id: "api", type: "service", command: "serve {port}", port: 8080, health: "http:/ready", restart: "always", persist: true });
    expect(entry({ id: "api", kind: "service", command: "serve", port: "auto", persist: false })).toEqual({
      id: "api", type: "service", command: "serve", port: "auto",
    });
  });

  test("service keys are not written for a plain job", () => {
    expect(entry(job("a", { port: "80", health: "tcp", restart: "never", persist: true }))).toEqual({ id: "a", command: "echo a" });
  });

  test("a gate: gate, message, timeout from gate_timeout, on_timeout; no job keys", () => {
    const e = entry({ id: "review", kind: "gate", message: "Ship it?", gate_timeout: "4h", on_timeout: "approve", tags: "GPU", retries: "2", command: "x" });
    expect(e).toEqual({ id: "review", gate: true, message: "Ship it?", timeout: "4h", on_timeout: "approve" });
    expect(entry({ id: "g", kind: "gate", gate_timeout: "3600" })).toEqual({ id: "g", gate: true, timeout: 3600 });
  });

  test("top level: name, schedule, agent_run_id, stage (only those given)", () => {
    const d: Draft = { ...draftOf([job("a")]), name: "etl", schedule: "0 3 * * *", agent_run_id: "agent-7", stage: "" };
    const { document } = toDocument(d);
    expect(Object.keys(document)).toEqual(["name", "schedule", "agent_run_id", "jobs"]);
    expect(document.schedule).toBe("0 3 * * *");
  });

  test("depends_on from edges: always a list, in the steps' order, without repeats", () => {
    const d = draftOf([job("d"), job("c"), job("b"), job("a")], [["b", "d"], ["c", "d"], ["a", "c"], ["a", "b"], ["c", "d"]]);
    const jobs = toDocument(d).document.jobs as Record<string, unknown>[];
    expect(jobs.map((j) => j.id)).toEqual(["a", "c", "b", "d"]);
    expect(jobs[3].depends_on).toEqual(["c", "b"]);
    expect(jobs[1].depends_on).toEqual(["a"]);
    expect("depends_on" in jobs[0]).toBe(false);
  });

  test("an edge from an unknown step is kept for the master to name", () => {
    const jobs = toDocument(draftOf([job("a")], [["ghost", "a"]])).document.jobs as Record<string, unknown>[];
    expect(jobs[0].depends_on).toEqual(["ghost"]);
  });
});

describe("stepOrder", () => {
  test("topological, ties by the steps' own order", () => {
    const d = draftOf([job("z"), job("y"), job("x"), job("w")], [["x", "z"], ["w", "y"]]);
    expect(stepOrder(d).map((s) => s.data.id)).toEqual(["x", "z", "w", "y"]);
  });

  test("moving a node does not change the order", () => {
    const d = draftOf([job("a"), job("b"), job("c")], [["a", "c"]]);
    const moved = { ...d, steps: d.steps.map((s, i) => ({ ...s, position: { x: 500 - i * 200, y: i * 40 } })) };
    expect(toYaml(moved)).toBe(toYaml(d));
  });

  test("steps in a cycle come last, none lost", () => {
    const d = draftOf([job("a"), job("b"), job("c")], [["b", "c"], ["c", "b"]]);
    expect(stepOrder(d).map((s) => s.data.id)).toEqual(["a", "b", "c"]);
  });
});

// ------------------------------------------------------------------------------------------
describe("toYaml", () => {
  test("block list of jobs, flow lists for depends_on and tags", () => {
    const y = toYaml(draftOf([job("a", { tags: "GPU,SSD" }), job("b"), job("c")], [["a", "c"], ["b", "c"]], "etl"));
    expect(y).toContain("name: etl\njobs:\n  - id: a\n    command: echo a\n    tags: [GPU, SSD]\n");
    expect(y).toContain("  - id: c\n    command: echo c\n    depends_on: [a, b]\n");
  });

  test("a header comment names the scripts to save beside the file", () => {
    const y = toYaml(draftOf([{ id: "l", kind: "script", file: "load.py", content: "x" }, { id: "r", kind: "script", file: "report.sh", content: "y" }]));
    expect(y.split("\n").filter((l) => l.startsWith("#")).join("\n")).toMatch(/beside this file.*load\.py, report\.sh/);
    expect(y).toContain("project: false");
    expect(toYaml(draftOf([job("a")]))).not.toMatch(/beside this file/);
  });

  test("text that YAML would read as something else is quoted", () => {
    const y = toYaml(draftOf([job("007", { env: "A=yes\nB=010\nC=a: b\nD=#x", affinity: "no" })]));
    const back = parse(y, { version: "1.1" }) as { jobs: Record<string, unknown>[] };
    expect(back.jobs[0].id).toBe("007");
    expect(back.jobs[0].env).toEqual({ A: "yes", B: "010", C: "a: b", D: "#x" });
    expect(back.jobs[0].affinity).toBe("no");
  });

  test("a gate's multi-line message survives", () => {
    const msg = "Ready?\nSay \"yes\": or no # really";
    const back = parse(toYaml(draftOf([{ id: "g", kind: "gate", message: msg }]))) as { jobs: Record<string, unknown>[] };
    expect(back.jobs[0].message).toBe(msg);
  });

  test("keys in the format's order: id, type, command/file, args, depends_on, ...", () => {
    const y = toYaml(draftOf([job("a"), { id: "api", kind: "service", command: "serve", port: "auto", retries: "1" }], [["a", "api"]]));
    expect(y).toContain("  - id: api\n    type: service\n    command: serve\n    depends_on: [a]\n    retries: 1\n    port: auto\n");
  });
});

// ------------------------------------------------------------------------------------------
describe("round trips: fromDocument(parse(toYaml(d))) gives the same graph", () => {
  for (const [name, make] of Object.entries({ diamond, tricky })) {
    test(name, () => {
      const d = make();
      const back = roundTrip(d);
      const byId = (steps: StepData[]) => Object.fromEntries(steps.map((s) => [s.id, s]));
      expect(byId(back.steps)).toEqual(byId(d.steps.map((s) => s.data)));
      expect(sortEdges(back.edges)).toEqual(sortEdges(d.edges));
      expect(back.top.name).toBe(d.name);
    });
  }

  test("extra keys: top-level ones kept; a job's hitl_message comes back as its gate", () => {
    const back = fromDocument(parse(toYaml(extras())));
    expect((back as Draft & { extra?: unknown }).extra).toEqual({ workspace: "shared", max_jobs: 10 });
    expect(back.steps.map((s) => s.data)).toEqual([
      { id: "a", kind: "job", command: "echo a" },
      { id: "a.approval", kind: "gate", message: "Go on?", gate_timeout: "4h", on_timeout: "reject" },
      { id: "b", kind: "job", command: "echo b" },
    ]);
    expect(sortEdges(back.edges)).toEqual(["a->a.approval", "a.approval->b"]);
  });

  test("the pipeline's own keys come back", () => {
    const d: Draft = { ...draftOf([job("a")]), name: "n", schedule: "*/5 * * * *", agent_run_id: "ag", stage: "EVAL" };
    const { top } = roundTrip(d);
    expect(top).toMatchObject({ name: "n", schedule: "*/5 * * * *", agent_run_id: "ag", stage: "EVAL" });
  });

  test("the YAML of the YAML is the same text", () => {
    const d = tricky();
    const once = toYaml(d);
    expect(toYaml(fromDocument(parse(once), toDocument(d).files))).toBe(once);
  });

  test("every step kind", () => {
    const d = draftOf([
      job("j", { retries: "3", timeout: "5m", priority: "2", delay: "10", tags: "A,B", env: "X=1", cwd: "/w", affinity: "parent" }),
      { id: "s", kind: "script", file: "s.py", content: "print('s')\n", args: "-v --n 3" },
      { id: "v", kind: "service", command: "serve", port: "auto", health: "tcp", restart: "never", persist: true },
      { id: "g", kind: "gate", message: "ok?", gate_timeout: "2h", on_timeout: "reject" },
    ], [["j", "s"], ["s", "g"], ["v", "g"]]);
    const back = roundTrip(d);
    expect(back.steps).toEqual(d.steps.map((s) => s.data));
  });
});

// ------------------------------------------------------------------------------------------
describe("fromDocument: what the master gives", () => {
  test("depends_on as a string or a list; a command as a list", () => {
    const d = fromDocument({
      name: "x",
      jobs: [
        { id: "a", command: ["python3", "-c", "print('hi there')"] },
        { id: "b", command: "echo b", depends_on: "a" },
        { id: "c", command: "echo c", depends_on: ["a", "b"] },
      ],
    });
    expect(d.steps.map((s) => s.data.id)).toEqual(["a", "b", "c"]);
    expect(d.steps[0].data.command).toBe("python3 -c \"print('hi there')\"");
    expect(shlexSplit(d.steps[0].data.command!)).toEqual(["python3", "-c", "print('hi there')"]);
    expect(sortEdges(d.edges)).toEqual(["a->b", "a->c", "b->c"]);
  });

  test("the reference's keys: requirement to tags (GENERAL adds none), file with args as a list", () => {
    const d = fromDocument({
      name: "ml",
      jobs: [
        { id: "fetch", type: "run", file: "fetch.py", args: ["--source", "s3://b", "--limit", "10"], priority: 5 },
        { id: "train", file: "train.py", depends_on: ["fetch"], requirement: "GPU", tags: ["SSD"] },
        { id: "any", command: "true", requirement: "GENERAL" },
      ],
    }, { "fetch.py": "print('fetch')\n" });
    const [fetch, train, any] = d.steps.map((s) => s.data);
    expect(fetch).toEqual({ id: "fetch", kind: "script", file: "fetch.py", content: "print('fetch')\n", args: "--source s3://b --limit 10", priority: "5" });
    expect(train.tags).toBe("SSD,GPU");
    expect(train.content).toBe("");
    expect(any.tags).toBeUndefined();
  });

  test("hitl_message on a job: the job, then a gate ID.approval its children follow", () => {
    const d = fromDocument({
      name: "ml",
      jobs: [
        { id: "train", command: "python3 train.py", hitl_message: "Publish?", max_wait_seconds: "4h" },
        { id: "publish", command: "python3 publish.py", depends_on: ["train"] },
      ],
    });
    expect(d.steps.map((s) => s.data)).toEqual([
      { id: "train", kind: "job", command: "python3 train.py" },
      { id: "train.approval", kind: "gate", message: "Publish?", gate_timeout: "4h", on_timeout: "reject" },
      { id: "publish", kind: "job", command: "python3 publish.py" },
    ]);
    expect(sortEdges(d.edges)).toEqual(["train->train.approval", "train.approval->publish"]);
  });

  test("a gate's hitl_message and max_wait_seconds are its message and timeout", () => {
    const d = fromDocument({ name: "g", jobs: [{ id: "g", gate: true, hitl_message: "Go?", max_wait_seconds: 60 }] });
    expect(d.steps[0].data).toEqual({ id: "g", kind: "gate", message: "Go?", gate_timeout: "60" });
  });

  test("a service; env as a mapping; affinity true is parent", () => {
    const d = fromDocument({ name: "s", jobs: [
      { id: "api", type: "service", command: ["serve", "{port}"], port: 8000, health: "tcp", restart: "always", persist: true, env: { A: "1", B: "two words" }, affinity: true },
    ] });
    expect(d.steps[0].data).toEqual({ id: "api", kind: "service", command: "serve '{port}'", port: "8000", health: "tcp", restart: "always", persist: true, env: "A=1\nB=two words", affinity: "parent" });
  });

  test("unknown keys are kept in extra and written back", () => {
    const doc = { name: "u", workspace: "shared", max_jobs: 5, project: true, jobs: [{ id: "a", command: "x", someday: 1 }] };
    const d = fromDocument(doc);
    const out = toDocument(d).document;
    expect(out.workspace).toBe("shared");
    expect(out.max_jobs).toBe(5);
    expect("project" in out).toBe(false);
    expect((out.jobs as Record<string, unknown>[])[0].someday).toBe(1);
  });

  test("laid out: every step has a place, parents left of children", () => {
    const d = fromDocument({ name: "x", jobs: [{ id: "b", command: "b", depends_on: "a" }, { id: "a", command: "a" }] });
    const pos = Object.fromEntries(d.steps.map((s) => [s.data.id, s.position]));
    expect(pos.a.x).toBeLessThan(pos.b.x);
  });

  test("a real pipeline file of the repository (etc/pipelines/etl.yaml's shape)", () => {
    const d = fromDocument(parse(`
name: etl
jobs:
  - id: extract
    command: [python3, -c, "print('extracted 3 rows')"]
    retries: 2
  - id: transform
    command: [python3, -c, "print('transformed')"]
    depends_on: extract
  - id: load
    command: [python3, -c, "print('loaded')"]
    depends_on: [transform]
    timeout: 60
`));
    expect(d.steps.map((s) => s.data.id)).toEqual(["extract", "transform", "load"]);
    expect(d.steps[2].data.timeout).toBe("60");
    expect(sortEdges(d.edges)).toEqual(["extract->transform", "transform->load"]);
  });
});

// ------------------------------------------------------------------------------------------
describe("toPython", () => {
  test("imports, the pipeline with only the given keys, and the submit at the end", () => {
    const py = toPython({ ...draftOf([job("a")]), name: "etl", stage: "PLAN" });
    expect(py).toContain("from titan.sdk import Client, Pipeline\n");
    expect(py).toContain('p = Pipeline("etl", stage="PLAN")\n');
    expect(py.endsWith('if __name__ == "__main__":\n    with Client() as titan:\n        print(titan.submit(p))  # the run\'s id\n')).toBe(true);
  });

  test("a job with the builder's option names and Python values", () => {
    const py = toPython(draftOf([job("a"), job("b", { command: "make -j4", retries: "2", timeout: "5m", priority: "1", tags: "GPU,SSD", env: "A=1", cwd: "/w", delay: "0", affinity: "false" })], [["a", "b"]]));
    expect(py).toContain('p.job("a", "echo a")\n');
    expect(py).toContain('p.job(\n    "b",\n    "make -j4",\n    depends_on=["a"],\n    priority=1,\n    tags=["GPU", "SSD"],\n    timeout="5m",\n    retries=2,\n    delay=0,\n    env={"A": "1"},\n    cwd="/w",\n    affinity=False,\n)\n');
  });

  test("a script: name, its content as an exact literal, args as a list", () => {
    const py = toPython(draftOf([{ id: "load", kind: "script", file: "load.py", content: "print(\"hi\")\nprint(2)\n", args: "--fast 'a b'" }]));
    expect(py).toContain('p.script(\n    "load",\n    "load.py",\n    (\n        "print(\\"hi\\")\\n"\n        "print(2)\\n"\n    ),\n    args=["--fast", "a b"],\n)\n');
  });

  test("a one-line script stays on one line", () => {
    expect(toPython(draftOf([{ id: "s", kind: "script", file: "s.sh", content: "echo hi" }]))).toContain('p.script("s", "s.sh", "echo hi")\n');
  });

  test("a service", () => {
    const py = toPython(draftOf([{ id: "api", kind: "service", command: "serve", port: "auto", health: "tcp", restart: "always", persist: true }]));
    expect(py).toContain('p.job("api", "serve", type="service", port="auto", health="tcp", restart="always", persist=True)\n');
  });

  test("a gate: message, depends_on, timeout, on_timeout", () => {
    const py = toPython(draftOf([job("a"), { id: "g", kind: "gate", message: "Ship?", gate_timeout: "3600", on_timeout: "approve" }], [["a", "g"]]));
    expect(py).toContain('p.gate("g", "Ship?", depends_on=["a"], timeout=3600, on_timeout="approve")\n');
    expect(toPython(draftOf([{ id: "g", kind: "gate" }]))).toContain('p.gate("g")\n');
  });

  test("steps in dependency order", () => {
    const py = toPython(draftOf([job("d"), job("b"), job("c"), job("a")], diamondEdges));
    const order = [...py.matchAll(/p\.job\("(\w)"/g)].map((m) => m[1]);
    expect(order).toEqual(["a", "b", "c", "d"]);
  });

  test("a schedule: submit registers it", () => {
    const py = toPython({ ...draftOf([job("a")]), schedule: "0 3 * * *" });
    expect(py).toContain('p = Pipeline("p", schedule="0 3 * * *")\n');
    expect(py).toContain("the schedule's id");
  });

  test("keys the builder does not take are named in a comment, not passed", () => {
    const d = fromDocument({ name: "x", version: "1.0", jobs: [{ id: "a", command: "x", someday: 1 }] });
    const py = toPython(d);
    expect(py).not.toContain("someday=");
    expect(py).toMatch(/# a: not given to p\.job.*someday/);
  });
});

describe("pyStr: exact Python string literals", () => {
  test.each([
    ["plain", '"plain"'],
    ["", '""'],
    ['say "hi"', '"say \\"hi\\""'],
    ["it's", '"it\'s"'],
    ["back\\slash", '"back\\\\slash"'],
    ["a\nb\r\n\tc", '"a\\nb\\r\\n\\tc"'],
    ["\u0000\u0007\u001b\u007f\u0085", '"\\x00\\x07\\x1b\\x7f\\x85"'],
    ["héllo wörld ✓ 🚀", '"héllo wörld ✓ 🚀"'],
    ["zero\u200bwidth\u2028line\u202eltr\ufeff", '"zero\\u200bwidth\\u2028line\\u202eltr\\ufeff"'],
    ["lone \ud800 surrogate", '"lone \\ud800 surrogate"'],
    ["{braces} %s $x", '"{braces} %s $x"'],
  ])("%j", (value, literal) => {
    expect(pyStr(value)).toBe(literal);
  });
});

// ------------------------------------------------------------------------------------------
describe("shell words", () => {
  test.each([
    ["make -j4 dist", ["make", "-j4", "dist"]],
    ["  a   b  ", ["a", "b"]],
    ["echo 'a b' \"c d\"", ["echo", "a b", "c d"]],
    ["a\\ b c", ["a b", "c"]],
    ["\"a \\\"q\\\" \\$x \\\\\"", ['a "q" \\$x \\']],
    ["'it'\"'\"'s'", ["it's"]],
    ["x'' ''", ["x", ""]],
  ])("shlexSplit(%j)", (text, words) => {
    expect(shlexSplit(text)).toEqual(words);
  });

  test("an unclosed quote is an error", () => {
    expect(() => shlexSplit("echo 'oops")).toThrow(/closing quotation/);
  });

  test("shJoin quotes what needs it, and shlexSplit gives the words back", () => {
    const words = ["python3", "-c", "print('hi')", "", "a b", "$HOME", "ä", "x;y", "it's \"q\" \\ $x `y`", "'", "\\", "a\nb"];
    expect(shJoin(["a", "b c", ""])).toBe("a 'b c' ''");
    expect(shJoin(["say", "it's \"so\""])).toBe("say \"it's \\\"so\\\"\"");
    expect(shlexSplit(shJoin(words))).toEqual(words);
  });
});

// ------------------------------------------------------------------------------------------
describe("wouldCycle / cyclePath", () => {
  const d = draftOf([job("a"), job("b"), job("c"), job("d")], diamondEdges);

  test("a diamond's edges are fine; another forward edge too", () => {
    const built = draftOf([job("a"), job("b"), job("c"), job("d")]);
    let g = built;
    for (const [s, t] of diamondEdges) {
      expect(wouldCycle(g, s, t)).toBe(false);
      g = { ...g, edges: [...g.edges, { source: s, target: t }] };
    }
    expect(wouldCycle(d, "a", "d")).toBe(false);
  });

  test("a back edge is refused, with the cycle it would close", () => {
    expect(wouldCycle(d, "d", "a")).toBe(true);
    expect(wouldCycle(d, "b", "a")).toBe(true);
    expect(cyclePath(d, "b", "a")).toEqual(["a", "b", "a"]);
    expect(cyclePath(d, "d", "a")?.join(" -> ")).toMatch(/^a -> [bc] -> d -> a$/);
  });

  test("a self edge is refused", () => {
    expect(wouldCycle(d, "b", "b")).toBe(true);
    expect(cyclePath(d, "b", "b")).toEqual(["b", "b"]);
  });

  test("an edge that is already there is refused", () => {
    expect(wouldCycle(d, "a", "b")).toBe(true);
  });

  test("between separate branches is fine", () => {
    expect(wouldCycle(d, "b", "c")).toBe(false);
    expect(wouldCycle(d, "c", "b")).toBe(false);
    expect(cyclePath(d, "c", "b")).toBeNull();
  });

  test("findCycle names a cycle already in the draft", () => {
    expect(findCycle(d)).toBeNull();
    const bad = { ...d, edges: [...d.edges, { source: "d", target: "b" }] };
    expect(findCycle(bad)).toEqual(["b", "d", "b"]);
  });
});

// ------------------------------------------------------------------------------------------
describe("checkLocal", () => {
  const keys = (d: Draft) => checkLocal(d).map((p) => `${p.step ?? "-"}:${p.key ?? "-"}`);

  test("a good draft has no problems", () => {
    expect(checkLocal(diamond())).toEqual([]);
    expect(checkLocal(tricky())).toEqual([]);
  });

  test("an empty id, named", () => {
    const problems = checkLocal(draftOf([job("a"), { id: "", kind: "gate" }]));
    expect(problems).toEqual([{ step: "", key: "id", message: "step 2 (a gate) has no id" }]);
  });

  test("a duplicate id: each step with it", () => {
    const problems = checkLocal(draftOf([job("a"), job("a", { command: "x" })]));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toEqual({ step: "a", key: "id", message: "id 'a' is used by 2 steps" });
  });

  test("an id with other characters", () => {
    expect(keys(draftOf([job("a b")]))).toEqual(["a b:id"]);
  });

  test("a job or a service without command, a script without file", () => {
    expect(keys(draftOf([{ id: "j", kind: "job" }, { id: "v", kind: "service", command: " " }, { id: "s", kind: "script", content: "x" }, { id: "g", kind: "gate" }]))).toEqual([
      "j:command", "v:command", "s:file",
    ]);
    expect(checkLocal(draftOf([{ id: "j", kind: "job" }]))[0].message).toBe("job 'j' has no command");
  });

  test("an edge to or from an unknown step", () => {
    expect(keys(draftOf([job("a")], [["a", "ghost"], ["nobody", "a"]]))).toEqual(["ghost:depends_on", "a:depends_on"]);
    expect(checkLocal(draftOf([job("a")], [["nobody", "a"]]))[0].message).toBe("'a' depends on 'nobody', which is not a step");
  });

  test("a cycle and a self edge", () => {
    expect(checkLocal(draftOf([job("a"), job("b")], [["a", "b"], ["b", "a"]])).map((p) => p.message)).toEqual(["cycle: a -> b -> a"]);
    expect(keys(draftOf([job("a")], [["a", "a"]]))).toEqual(["a:depends_on"]);
  });

  test("values checked as typed: numbers, durations, env lines, service keys, gate timeout", () => {
    expect(keys(draftOf([
      job("a", { retries: "-1", priority: "x", timeout: "0", delay: "soon", env: "A=1\nnot a pair" }),
      { id: "v", kind: "service", command: "s", port: "70000", restart: "sometimes", health: "udp" },
      { id: "g", kind: "gate", gate_timeout: "forever" },
    ]))).toEqual(["a:priority", "a:retries", "a:timeout", "a:delay", "a:env", "v:port", "v:restart", "v:health", "g:gate_timeout"]);
  });

  test("the pipeline's own keys", () => {
    expect(keys({ ...draftOf([job("a")]), name: "" })).toEqual(["-:name"]);
    expect(keys({ ...draftOf([job("a")]), name: "my pipeline", agent_run_id: "a/b", schedule: "daily" })).toEqual(["-:name", "-:agent_run_id", "-:schedule"]);
    expect(keys(emptyDraft("x"))).toEqual(["-:jobs"]);
  });

  test("a script's file must name a file", () => {
    expect(keys(draftOf([{ id: "a", kind: "script", file: "dir/", content: "1" }, { id: "b", kind: "script", file: "..", content: "1" }]))).toEqual(["a:file", "b:file"]);
    expect(keys(draftOf([{ id: "a", kind: "script", file: "scripts/x.py", content: "1" }]))).toEqual([]);
  });

  test("an unclosed quote in a command", () => {
    expect(keys(draftOf([job("a", { command: "echo 'oops" })]))).toEqual(["a:command"]);
  });
});

describe("durations", () => {
  test.each([["90", 90], ["1.5", 1.5], ["500ms", 0.5], ["5m", 300], ["1h30m", 5400], ["1h 30m", 5400], ["1d", 86400], ["2S", 2]])("%s", (t, s) => {
    expect(durationSeconds(t)).toBe(s);
  });
  test.each(["", "soon", "5 minutes", "m5", "1h x"])("%j is not one", (t) => {
    expect(durationSeconds(t)).toBeNull();
  });
  test("envMap", () => {
    expect(envMap("A=1\nB")).toEqual({ A: "1", B: "" });
  });
});

// ------------------------------------------------------------------------------------------
describe("layout", () => {
  const d = draftOf([job("a"), job("b"), job("c"), job("d")], diamondEdges);

  test("LR: ranks from left to right, nodes apart", () => {
    const pos = Object.fromEntries(layout(d).steps.map((s) => [s.data.id, s.position]));
    expect(pos.a.x).toBeLessThan(pos.b.x);
    expect(pos.b.x).toBe(pos.c.x);
    expect(pos.c.x).toBeLessThan(pos.d.x);
    expect(Math.abs(pos.b.y - pos.c.y)).toBeGreaterThanOrEqual(NODE_H);
  });

  test("TB: ranks from top to bottom", () => {
    const pos = Object.fromEntries(layout(d, "TB").steps.map((s) => [s.data.id, s.position]));
    expect(pos.a.y).toBeLessThan(pos.b.y);
    expect(pos.b.y).toBe(pos.c.y);
    expect(Math.abs(pos.b.x - pos.c.x)).toBeGreaterThanOrEqual(NODE_W);
  });

  test("keeps the steps, their data and the edges; does not change its input", () => {
    const before = JSON.stringify(d);
    const out = layout(d);
    expect(out.steps.map((s) => s.data)).toEqual(d.steps.map((s) => s.data));
    expect(out.edges).toEqual(d.edges);
    expect(JSON.stringify(d)).toBe(before);
  });

  test("duplicate ids and unknown edges do not break it", () => {
    const out = layout(draftOf([job("a"), job("a"), job("b")], [["a", "b"], ["x", "b"]]));
    expect(out.steps).toHaveLength(3);
    for (const s of out.steps) expect(Number.isFinite(s.position.x) && Number.isFinite(s.position.y)).toBe(true);
  });
});

describe("freshId, emptyDraft, pasteSteps", () => {
  test("freshId: the first of kind-N not taken", () => {
    expect(freshId(emptyDraft(), "job")).toBe("job-1");
    expect(freshId(draftOf([job("job-1"), job("gate-1"), job("job-2")]), "job")).toBe("job-3");
    expect(freshId(draftOf([job("job-1")]), "gate")).toBe("gate-1");
  });

  test("emptyDraft", () => {
    expect(emptyDraft("etl")).toEqual({ name: "etl", steps: [], edges: [] });
    expect(emptyDraft().name).toBe("pipeline");
  });

  test("pasteSteps: fresh ids, moved, edges among the copies only", () => {
    const d = draftOf([job("a"), job("b"), job("c")], [["a", "b"], ["b", "c"]]);
    const { draft, ids } = pasteSteps(d, d.steps.slice(0, 2), d.edges);
    expect(ids).toEqual(["a-2", "b-2"]);
    expect(draft.steps).toHaveLength(5);
    expect(draft.steps[3].position).toEqual({ x: 32, y: 32 });
    expect(draft.steps[3].data.command).toBe("echo a");
    expect(sortEdges(draft.edges)).toEqual(["a-2->b-2", "a->b", "b->c"]);
    expect(d.steps).toHaveLength(3);
    expect(pasteSteps(draft, [step(job("a-2"))]).ids).toEqual(["a-3"]);
  });
});

// ------------------------------------------------------------------------------------------
describe("History", () => {
  test("undo and redo move along the states", () => {
    const h = new History(0);
    expect(h.canUndo).toBe(false);
    expect(h.undo()).toBeNull();
    h.push(1);
    h.push(2);
    expect(h.current).toBe(2);
    expect(h.undo()).toBe(1);
    expect(h.undo()).toBe(0);
    expect(h.canUndo).toBe(false);
    expect(h.undo()).toBeNull();
    expect(h.current).toBe(0);
    expect(h.canRedo).toBe(true);
    expect(h.redo()).toBe(1);
    expect(h.redo()).toBe(2);
    expect(h.redo()).toBeNull();
    expect(h.canRedo).toBe(false);
    expect(h.current).toBe(2);
  });

  test("a push after undo drops the redo branch", () => {
    const h = new History("a");
    h.push("b");
    h.push("c");
    h.undo();
    h.push("x");
    expect(h.canRedo).toBe(false);
    expect(h.redo()).toBeNull();
    expect(h.undo()).toBe("b");
    expect(h.undo()).toBe("a");
  });

  test("at most `limit` states to go back to", () => {
    const h = new History(0, 3);
    for (let i = 1; i <= 10; i++) h.push(i);
    expect([h.undo(), h.undo(), h.undo(), h.undo()]).toEqual([9, 8, 7, null]);
    expect(h.current).toBe(7);
    const big = new History(0);
    for (let i = 1; i <= 250; i++) big.push(i);
    let n = 0;
    while (big.undo() !== null) n++;
    expect(n).toBe(200);
  });

  test("drafts: undo restores the graph as it was", () => {
    const d0 = draftOf([job("a")]);
    const h = new History<Draft>(d0);
    const d1 = { ...d0, steps: [...d0.steps, step(job("b"))] };
    h.push(d1);
    h.push({ ...d1, edges: [{ source: "a", target: "b" }] });
    expect(h.undo()).toBe(d1);
    expect(h.undo()).toBe(d0);
    expect(h.redo()?.steps.map((s) => s.data.id)).toEqual(["a", "b"]);
  });
});

test("the ModelApi object has every function", () => {
  expect(Object.keys(model).sort()).toEqual(["checkLocal", "freshId", "fromDocument", "layout", "toDocument", "toPython", "toYaml", "wouldCycle"]);
  expect(model.toYaml).toBe(toYaml);
});

test("toPython: a command or a message of several lines is written one line per piece", () => {
  const py = toPython(draftOf([job("a", { command: "python3 -c 'import os\nprint(1)\n'" }), { id: "g", kind: "gate", message: "Two\nlines" }], [["a", "g"]]));
  expect(py).toContain('p.job(\n    "a",\n    (\n        "python3 -c \'import os\\n"\n        "print(1)\\n"\n        "\'"\n    ),\n)\n');
  expect(py).toContain('p.gate(\n    "g",\n    (\n        "Two\\n"\n        "lines"\n    ),\n    depends_on=["a"],\n)\n');
});

describe("a service that runs a file (the public reference's services)", () => {
  const doc = { name: "svc", jobs: [{ id: "api", type: "service", file: "server.py", args: ["--bind", "127.0.0.1"], port: 8000, health: "tcp", restart: "always" }] };
  const d = fromDocument(doc, { "server.py": "serve()\n" });

  test("fromDocument keeps its file, content and args", () => {
    expect(d.steps[0].data).toEqual({ id: "api", kind: "service", file: "server.py", content: "serve()\n", args: "--bind 127.0.0.1", port: "8000", health: "tcp", restart: "always" });
    expect(checkLocal(d)).toEqual([]);
  });

  test("toDocument ships the file", () => {
    const out = toDocument(d);
    expect((out.document.jobs as unknown[])[0]).toEqual({ id: "api", type: "service", file: "server.py", args: "--bind 127.0.0.1", port: 8000, health: "tcp", restart: "always" });
    expect(out.files).toEqual({ "server.py": "serve()\n" });
  });

  test("toPython: p.script with the service's type and port, its other options set on the job", () => {
    expect(toPython(d)).toContain('job = p.script("api", "server.py", "serve()\\n", args=["--bind", "127.0.0.1"], type="service", port=8000)\njob.health = "tcp"\njob.restart = "always"\n');
  });

  test("a service with a command and a stale file runs the command", () => {
    const both: Draft = draftOf([{ id: "s", kind: "service", command: "serve", file: "old.py", content: "x" }]);
    expect(toDocument(both).document.jobs).toEqual([{ id: "s", type: "service", command: "serve" }]);
    expect(toDocument(both).files).toEqual({});
  });
});

test("toDocument: blanks around a command go, an escaped blank at its end stays", () => {
  expect(entry(job("a", { command: "  echo a  " })).command).toBe("echo a");
  expect(entry(job("a", { command: "echo a\\ " })).command).toBe("echo a\\ ");
  expect(shlexSplit(entry(job("a", { command: "echo a\\ " })).command as string)).toEqual(["echo", "a "]);
});

test("toDocument: free text is written as typed (message, cwd, stage); a blank one is left out", () => {
  const d: Draft = { ...draftOf([job("a", { cwd: " /tmp/x " }), { id: "g", kind: "gate", message: "Ship it?\n" }, job("b", { cwd: "  " })]), stage: " EVAL " };
  const { document } = toDocument(d);
  const jobs = document.jobs as Record<string, unknown>[];
  expect(jobs[0].cwd).toBe(" /tmp/x ");
  expect(jobs[1].message).toBe("Ship it?\n");
  expect("cwd" in jobs[2]).toBe(false);
  expect(document.stage).toBe(" EVAL ");
});

test("toYaml: characters PyYAML reads as line breaks or refuses are escaped, in double quotes", () => {
  const y = toYaml(draftOf([{ id: "g", kind: "gate", message: "a\u2028b\u0085c\u0001d\te\ufefff" }]));
  expect(y).toContain('message: "a\\u2028b\\u0085c\\x01d\\te\\ufefff"\n');
  expect(y).not.toMatch(/[\u2028\u0085\u0001\t\ufeff]/);
  expect((parse(y) as { jobs: { message: string }[] }).jobs[0].message).toBe("a\u2028b\u0085c\u0001d\te\ufefff");
});
