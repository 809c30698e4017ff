import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";

describe("the toolchain", () => {
  it("parses what it writes", () => {
    expect(parse(stringify({ name: "x", jobs: [{ id: "a" }] }))).toEqual({ name: "x", jobs: [{ id: "a" }] });
  });
});
