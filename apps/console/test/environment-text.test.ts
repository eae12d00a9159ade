import { describe, expect, it } from "vitest";
import {
  EnvTextError,
  environmentFromText,
  parseCondaEnvironment,
  parseNpmDependencies,
  parsePipRequirements,
} from "../src/lib/environment-text.js";

describe("environment text from the deploy form", () => {
  it("reads requirements.txt, dropping comments and blank lines", () => {
    expect(parsePipRequirements("# data\nnumpy==1.26.4\n\npandas>=2  # tables\n")).toEqual([
      "numpy==1.26.4",
      "pandas>=2",
    ]);
    expect(() => parsePipRequirements("-r other.txt")).toThrow(EnvTextError);
  });

  it("reads npm dependencies from package.json, a plain object, or name@range lines", () => {
    expect(parseNpmDependencies('{"name":"x","dependencies":{"lodash":"^4.17.21"}}')).toEqual({
      lodash: "^4.17.21",
    });
    expect(parseNpmDependencies('{"zod":"^4"}')).toEqual({ zod: "^4" });
    expect(parseNpmDependencies("lodash@^4.17.21\n@scope/pkg@1.2.3\nleft-pad")).toEqual({
      lodash: "^4.17.21",
      "@scope/pkg": "1.2.3",
      "left-pad": "*",
    });
    expect(() => parseNpmDependencies("{nope")).toThrow(/not valid JSON/);
    expect(() => parseNpmDependencies('{"a": 1}')).toThrow(/must be a string/);
  });

  it("reads a conda environment.yml with a nested pip list, and Ray's JSON dict", () => {
    const yml = `name: demo
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip:
      - numpy==1.20.2
      - "pandas"
  - scipy
`;
    expect(parseCondaEnvironment(yml)).toEqual({
      channels: ["conda-forge"],
      dependencies: ["python=3.11", { pip: ["numpy==1.20.2", "pandas"] }, "scipy"],
    });
    expect(
      parseCondaEnvironment('{"channels":["defaults"],"dependencies":["python=3.10",{"pip":["x"]}]}'),
    ).toEqual({
      channels: ["defaults"],
      dependencies: ["python=3.10", { pip: ["x"] }],
    });
    expect(() => parseCondaEnvironment("dependencies: numpy")).toThrow(/as a list/);
    expect(() => parseCondaEnvironment("- numpy")).toThrow(/start with/);
  });

  it("builds the spec for each kind", () => {
    expect(environmentFromText("none", "ignored")).toEqual({ kind: "none" });
    expect(environmentFromText("pip", "numpy", "3.11")).toEqual({
      kind: "pip",
      requirements: ["numpy"],
      python: "3.11",
    });
    expect(environmentFromText("npm", "zod@4")).toEqual({ kind: "npm", dependencies: { zod: "4" } });
  });
});
