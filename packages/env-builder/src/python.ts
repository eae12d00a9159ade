import { execFile } from "node:child_process";
import { invalidSpec, unsupported } from "./errors.js";

export interface PythonInterpreter {
  /** The real executable (never a version-manager shim), e.g. `/usr/bin/python3.11`. */
  executable: string;
  /** `sys.prefix`: for a base interpreter, the directory holding its `bin/` and `lib/`. */
  prefix: string;
  /** Full version, e.g. `3.11.7`. */
  version: string;
  /** The version of the pip installed for it, if any. */
  pip: string | null;
}

const PROBE = `
import json, sys
try:
    from importlib.metadata import version
    pip = version("pip")
except Exception:
    pip = None
print(json.dumps({"executable": sys.executable, "prefix": sys.prefix, "version": "%d.%d.%d" % sys.version_info[:3], "pip": pip}))
`;

/**
 * Whether this interpreter's pip can install into another environment (`pip --python`, pip
 * 22.3+). Then venvs are made without a pip of their own: several times less work per build than
 * ensurepip, and an environment shared by deployments cannot be changed by a replica running
 * `pip install` in it.
 */
export function canInstallIntoOtherPython(python: PythonInterpreter): boolean {
  const [major = 0, minor = 0] = (python.pip ?? "").split(".").map((n) => Number.parseInt(n, 10));
  return major > 22 || (major === 22 && minor >= 3);
}

/** Ask an interpreter what it is; `undefined` when it cannot run (absent, broken, not python). */
export function probePython(command: string): Promise<PythonInterpreter | undefined> {
  return new Promise((resolve) => {
    execFile(command, ["-c", PROBE], { timeout: 15_000 }, (error, stdout) => {
      if (error) return resolve(undefined);
      try {
        const facts = JSON.parse(stdout.trim()) as PythonInterpreter;
        resolve(typeof facts.executable === "string" && facts.executable ? facts : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}

/**
 * A pip requirement a tenant may ask for: a PEP 508 name with extras and version specifiers, or
 * `name @ https://...`. Installer options (`-r /etc/...`, `--index-url`) and local paths would
 * let one tenant read the cluster's files or another tenant's code, so they are refused; the
 * operator configures indexes and local wheel directories with `pipArgs`.
 */
const SPECIFIER = String.raw`(===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+`;
const NAME = String.raw`[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\s*\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\])?`;
const PIP_REQUIREMENT = new RegExp(String.raw`^${NAME}\s*(?:${SPECIFIER}(?:\s*,\s*${SPECIFIER})*)?$`);
const PIP_URL_REQUIREMENT = new RegExp(String.raw`^${NAME}\s*@\s*(?:https?|git\+https)://[^\s]+$`);

export function checkPipRequirement(requirement: string): void {
  if (PIP_REQUIREMENT.test(requirement) || PIP_URL_REQUIREMENT.test(requirement)) return;
  throw invalidSpec(
    `pip requirement '${requirement}' is not allowed: use 'name', 'name==1.2' style specifiers or 'name @ https://...' (no options, no local paths)`,
  );
}

/** A conda match spec (`numpy`, `numpy=1.26`, `numpy>=1.2,<2`, `python 3.11.*`), never a path or an option. */
const CONDA_DEPENDENCY = /^[A-Za-z0-9_][A-Za-z0-9._-]*(?:\s*[=<>!~ ]\s*[A-Za-z0-9.*+!_=<>,|-]*)?$/;

export function checkCondaDependency(dependency: string): void {
  if (CONDA_DEPENDENCY.test(dependency)) return;
  throw invalidSpec(`conda dependency '${dependency}' is not a package match spec`);
}

export function checkCondaChannel(channel: string): void {
  if (/^[A-Za-z0-9_][A-Za-z0-9._/-]*$/.test(channel) || /^https:\/\/[^\s]+$/.test(channel)) return;
  throw invalidSpec(`conda channel '${channel}' is not allowed: use a channel name or an https URL`);
}

/** A constraint on the python version, from a conda dependency (`python=3.11`) or a pip spec's `python`. */
export interface PythonConstraint {
  /** As written, for messages. */
  text: string;
  accepts(version: string): boolean;
  /** `3.12` when the constraint names one minor version, to look for `python3.12` on PATH. */
  minor?: string;
}

const PYTHON_DEPENDENCY = /^python(?:\s*(==|=|>=|<=|>|<|!=|\s)\s*(\d+(?:\.\d+)*)(?:\.\*)?)?$/;

/** Parses conda's `python`, `python=3.11`, `python 3.11.*`, `python>=3.9`; undefined for other forms. */
export function parsePythonDependency(dependency: string): PythonConstraint | undefined {
  const match = PYTHON_DEPENDENCY.exec(dependency.trim());
  if (!match) return undefined;
  const [, rawOp, wanted] = match;
  if (!wanted) return { text: dependency, accepts: () => true };
  const op = rawOp?.trim() === "" || rawOp === undefined ? "=" : rawOp;
  const want = wanted.split(".").map(Number);
  const minor = want.length >= 2 && (op === "=" || op === "==") ? `${want[0]}.${want[1]}` : undefined;
  const accepts = (version: string) => {
    const have = version.split(".").map(Number);
    if (op === "=") return want.every((n, i) => have[i] === n);
    const order = compareVersions(have, want);
    switch (op) {
      case "==":
        return order === 0;
      case "!=":
        return order !== 0;
      case ">=":
        return order >= 0;
      case "<=":
        return order <= 0;
      case ">":
        return order > 0;
      default:
        return order < 0;
    }
  };
  return { text: dependency, accepts, minor };
}

/** A pip spec's `python: "3.12"`. */
export function minorVersionConstraint(minor: string): PythonConstraint {
  return { text: `python ${minor}`, accepts: (v) => `${v}.`.startsWith(`${minor}.`), minor };
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * What a conda spec needs, split into the parts a plain venv can provide (python, pip and pip
 * packages) and the conda packages only conda/micromamba can install.
 */
export interface CondaNeeds {
  python?: PythonConstraint;
  pipRequirements: string[];
  condaOnly: string[];
}

export function splitCondaDependencies(dependencies: (string | { pip: string[] })[]): CondaNeeds {
  const needs: CondaNeeds = { pipRequirements: [], condaOnly: [] };
  for (const dependency of dependencies) {
    if (typeof dependency !== "string") {
      needs.pipRequirements.push(...dependency.pip);
      continue;
    }
    checkCondaDependency(dependency);
    const python = parsePythonDependency(dependency);
    if (python) needs.python = python;
    // A venv always has pip; an unpinned `pip` dependency (Ray's examples list it) asks for nothing more.
    else if (dependency.trim() !== "pip") needs.condaOnly.push(dependency);
  }
  return needs;
}

/** The interpreter to build a venv from: the base one if it fits, else `pythonX.Y` on PATH. */
export async function chooseInterpreter(
  base: PythonInterpreter,
  constraint: PythonConstraint | undefined,
  probe: (command: string) => Promise<PythonInterpreter | undefined>,
  hash: string,
): Promise<PythonInterpreter> {
  if (!constraint || constraint.accepts(base.version)) return base;
  const other = constraint.minor ? await probe(`python${constraint.minor}`) : undefined;
  if (other && constraint.accepts(other.version)) return other;
  throw unsupported(
    `'${constraint.text}' is not available on this cluster: the python interpreter is ${base.version}` +
      (constraint.minor ? ` and there is no python${constraint.minor} on PATH` : "") +
      " (install it, or point TESSERA_PYTHON at one that fits)",
    hash,
  );
}
