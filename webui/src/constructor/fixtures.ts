// Sample drafts for the model's tests (model.test.ts) and for the cross-check of its exports
// against Titan's own Python (export-fixtures.ts, run by tests/unit/test_constructor_export.py):
// every kind of step, every key, and text that is hard to quote.
import type { Draft, Step, StepData } from "./types";

function step(data: StepData, x = 0, y = 0): Step {
  return { data, position: { x, y } };
}

/** A diamond with a gate before the last step: job, script, service, gate and every key. */
export function diamond(): Draft {
  return {
    name: "release",
    agent_run_id: "agent-7",
    stage: "PLAN",
    steps: [
      step({ id: "build", kind: "job", command: "make -j4 dist", retries: "2", timeout: "10m", priority: "5", tags: "GPU,HIGH_MEM", env: "MODE=release\nEMPTY=", cwd: "/tmp" }),
      step({ id: "load", kind: "script", file: "load.py", content: "import sys\nprint('loaded', sys.argv[1:])\n", args: "--fast 'two words'", delay: "0", affinity: "parent" }),
      step({ id: "api", kind: "service", command: "python3 -m http.server {port} --bind 127.0.0.1", port: "auto", health: "http:/", restart: "always", persist: true }),
      step({ id: "review", kind: "gate", message: "Ship it?", gate_timeout: "1h", on_timeout: "approve" }),
      step({ id: "deploy", kind: "job", command: "sh -c 'echo deployed && exit 0'", timeout: "1.5", affinity: "strict:w1" }),
    ],
    edges: [
      { source: "build", target: "load" },
      { source: "build", target: "api" },
      { source: "load", target: "review" },
      { source: "api", target: "review" },
      { source: "review", target: "deploy" },
    ],
  };
}

/** Text that is hard to quote, in YAML and in Python: quotes, backslashes, YAML 1.1 words,
 *  colons and hashes, non-ASCII, tabs, CRLF, an emoji, invisible characters. */
export function tricky(): Draft {
  const content = "#!/bin/sh\n# a \"quoted\" 'script' with \\backslashes\\ and \t tabs\r\necho \"héllo wörld ✓ 🚀\" '$HOME' \\n\nprintf '%s\\n' \"\u200b\u2028x\"\n";
  return {
    name: "tricky_1.0",
    schedule: "*/5 * * * *",
    steps: [
      step({ id: "007", kind: "job", command: "echo \"a: b # c\" 'it''s' \\$x", env: "YES=yes\nNO=no\nON=on\nNUM=010\nQUOTE=say \"hi\"\nCOLON=a: b\nHASH=#x", tags: "yes,no" }),
      step({ id: "on", kind: "script", file: "run.sh", content, args: "\"a b\" c\\ d 'e \"f\"'" }),
      step({ id: "off", kind: "gate", message: "Ready?\nSay \"yes\": or no # really\n \n\tindented\u2028sep\u0085nel\u00a0nbsp\ufeff", gate_timeout: "90" }),
      step({ id: "null", kind: "job", command: "true", affinity: "no", priority: "-3", retries: "0", env: "TAB=a\tb\u2028c", cwd: " /tmp/lead " }),
      step({ id: "x.y-z_w", kind: "service", command: "python3 -m http.server 8123", port: "8123", cwd: "/tmp/ä dir" }),
    ],
    edges: [
      { source: "007", target: "on" },
      { source: "007", target: "off" },
      { source: "on", target: "null" },
      { source: "off", target: "null" },
      { source: "007", target: "x.y-z_w" },
    ],
  };
}

/** Keys the constructor has no field for, kept through the round trip. */
export function extras(): Draft {
  return {
    name: "extras",
    steps: [
      step({ id: "a", kind: "job", command: "echo a", extra: { hitl_message: "Go on?", max_wait_seconds: "4h" } } as StepData),
      step({ id: "b", kind: "job", command: "echo b" }),
    ],
    edges: [{ source: "a", target: "b" }],
    extra: { workspace: "shared", max_jobs: 10 },
  } as Draft;
}

/** Scripts of one name with different contents, and a script in a folder. */
export function scripts(): Draft {
  return {
    name: "scripts",
    steps: [
      step({ id: "a", kind: "script", file: "x.py", content: "print('one')\n" }),
      step({ id: "b", kind: "script", file: "x.py", content: "print('two')\n", args: "--two" }),
      step({ id: "c", kind: "script", file: "sub/y.sh", content: "echo y\n" }),
      // a service that runs a file (as the public reference's services do)
      step({ id: "srv", kind: "service", file: "server.py", content: "import http.server\n", args: "--bind 127.0.0.1", port: "auto", health: "tcp", restart: "always", persist: true }),
    ],
    edges: [{ source: "a", target: "c" }, { source: "b", target: "c" }],
  };
}

export const FIXTURES: Record<string, () => Draft> = { diamond, tricky, extras, scripts };
