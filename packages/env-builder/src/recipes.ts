import { accessSync, constants } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import type { EnvironmentSpec, RuntimeKind } from "@tessera/core";
import { unsupported } from "./errors.js";
import { checkNpmDependency, environmentPackageJson } from "./npm.js";
import {
  type CondaNeeds,
  canInstallIntoOtherPython,
  checkCondaChannel,
  checkPipRequirement,
  chooseInterpreter,
  minorVersionConstraint,
  type PythonConstraint,
  type PythonInterpreter,
  probePython,
  splitCondaDependencies,
} from "./python.js";
import type { BuildCommand } from "./run-command.js";

/** What building one environment takes, decided before anything is touched on disk. */
export interface Recipe {
  location: string;
  interpreter: string;
  /** Written into the environment's directory before the commands run. */
  files: Record<string, string>;
  commands: BuildCommand[];
  /** Said at the top of the log (why this recipe was chosen). */
  notes: string[];
}

export type Plan = { base: { location: string; interpreter: string } } | { recipe: Recipe };

/** How this machine installs things: the builder's options recipes depend on. */
export interface RecipeOptions {
  /** Base python interpreter (command or path); default `python3`. */
  python?: string;
  /** Extra `pip install` arguments set by the operator (`--index-url`, `--find-links DIR`, `--no-index`). */
  pipArgs?: string[];
  /** Create venvs with `--system-site-packages` (shares the base interpreter's packages). */
  systemSitePackages?: boolean;
  /** micromamba/mamba/conda executable; undefined = look for one on PATH; `false` = never use conda. */
  micromamba?: string | false;
  /** npm executable; default `npm`. */
  npm?: string;
  /** Extra `npm install` arguments set by the operator (`--registry URL`, `--offline`, `--cache DIR`). */
  npmArgs?: string[];
  /** Variables builds may inherit from (filtered, see run-command); default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

const PREFIX = "prefix";

/**
 * Turns a spec into a recipe for this machine: which interpreter, venv or conda, which commands.
 * Everything a cluster cannot provide or a tenant may not ask for is refused here, before the
 * environment's directory is created.
 */
export class RecipePlanner {
  private basePython?: Promise<PythonInterpreter>;
  private condaTool?: string | null;

  constructor(
    private readonly options: RecipeOptions,
    /** The builder's root, for micromamba's package cache. */
    private readonly root: string,
  ) {}

  /** Decide how to provide the spec; throws ENV_UNSUPPORTED / VALIDATION_FAILED before touching disk. */
  async plan(runtime: RuntimeKind, spec: EnvironmentSpec, hash: string, dir: string): Promise<Plan> {
    if (runtime === "node") {
      if (spec.kind === "none")
        return { base: { location: dirname(dirname(process.execPath)), interpreter: process.execPath } };
      if (spec.kind !== "npm")
        throw unsupported(`a ${spec.kind} environment cannot serve a node deployment: use an npm spec`, hash);
      for (const [name, version] of Object.entries(spec.dependencies)) checkNpmDependency(name, version);
      const files = { "package.json": environmentPackageJson(hash, spec.dependencies) };
      // No dependencies: nothing to install, but an npm environment always has its node_modules.
      if (Object.keys(spec.dependencies).length === 0)
        return {
          recipe: {
            location: dir,
            interpreter: process.execPath,
            files: { ...files, "node_modules/.empty": "" },
            commands: [],
            notes: [],
          },
        };
      return {
        recipe: {
          location: dir,
          interpreter: process.execPath,
          files,
          commands: [
            {
              title: "npm install",
              argv: [
                this.options.npm ?? "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--omit=dev",
                ...(this.options.npmArgs ?? []),
              ],
              cwd: dir,
            },
          ],
          notes: [],
        },
      };
    }

    if (spec.kind === "npm")
      throw unsupported("an npm environment cannot serve a python deployment: use a pip or conda spec", hash);
    if (spec.kind === "none") return { base: baseOf(await this.basePythonInterpreter(hash)) };
    if (spec.kind === "pip") {
      spec.requirements.forEach(checkPipRequirement);
      const constraint = spec.python ? minorVersionConstraint(spec.python) : undefined;
      return this.venvPlan(hash, dir, constraint, spec.requirements, []);
    }

    spec.channels.forEach(checkCondaChannel);
    const needs = splitCondaDependencies(spec.dependencies);
    needs.pipRequirements.forEach(checkPipRequirement);
    const tool = this.condaExecutable();
    if (tool) return { recipe: this.condaRecipe(tool, dir, spec.channels, needs, spec.dependencies) };
    if (needs.condaOnly.length > 0)
      throw unsupported(
        `this cluster has no conda or micromamba, which these conda dependencies need: ${needs.condaOnly.join(", ")} ` +
          "(without conda only 'python' and pip packages can be provided, as a venv)",
        hash,
      );
    return this.venvPlan(hash, dir, needs.python, needs.pipRequirements, [
      "no conda/micromamba on this cluster: python + pip dependencies are built as a venv",
    ]);
  }

  private async venvPlan(
    hash: string,
    dir: string,
    constraint: PythonConstraint | undefined,
    requirements: string[],
    notes: string[],
  ): Promise<Plan> {
    const python = await chooseInterpreter(
      await this.basePythonInterpreter(hash),
      constraint,
      probePython,
      hash,
    );
    if (requirements.length === 0) return { base: baseOf(python) };
    const prefix = join(dir, PREFIX);
    const venvPython = join(prefix, "bin", "python");
    const externalPip = canInstallIntoOtherPython(python);
    return {
      recipe: {
        location: prefix,
        interpreter: venvPython,
        files: { "requirements.txt": `${requirements.join("\n")}\n` },
        commands: [
          {
            title: "create the venv",
            argv: [
              python.executable,
              "-m",
              "venv",
              ...(externalPip ? ["--without-pip"] : []),
              ...(this.options.systemSitePackages ? ["--system-site-packages"] : []),
              prefix,
            ],
            cwd: dir,
          },
          externalPip
            ? this.pipInstall([python.executable, "-m", "pip", "--python", venvPython], dir)
            : this.pipInstall([venvPython, "-m", "pip"], dir),
        ],
        notes: [
          ...notes,
          `python ${python.version} (${python.executable}), pip ${python.pip ?? "from ensurepip"}`,
        ],
      },
    };
  }

  private condaRecipe(
    tool: string,
    dir: string,
    channels: string[],
    needs: CondaNeeds,
    dependencies: (string | { pip: string[] })[],
  ): Recipe {
    const prefix = join(dir, PREFIX);
    const python = join(prefix, "bin", "python");
    const condaDependencies = dependencies.filter((d): d is string => typeof d === "string");
    if (!needs.python) condaDependencies.push("python");
    if (needs.pipRequirements.length > 0 && !condaDependencies.some((d) => /^pip\b/.test(d)))
      condaDependencies.push("pip");
    const isMicromamba = /micromamba$/.test(tool);
    const env = this.options.env ?? process.env;
    const commands: BuildCommand[] = [
      {
        title: "create the conda environment",
        argv: [
          tool,
          "create",
          "--yes",
          "--prefix",
          prefix,
          ...(channels.length > 0 ? channels : ["conda-forge"]).flatMap((c) => ["-c", c]),
          ...(isMicromamba && !env.MAMBA_ROOT_PREFIX
            ? ["--root-prefix", join(this.root, ".micromamba")]
            : []),
          ...condaDependencies,
        ],
        cwd: dir,
      },
    ];
    if (needs.pipRequirements.length > 0) commands.push(this.pipInstall([python, "-m", "pip"], dir));
    return {
      location: prefix,
      interpreter: python,
      files:
        needs.pipRequirements.length > 0
          ? { "requirements.txt": `${needs.pipRequirements.join("\n")}\n` }
          : {},
      commands,
      notes: [`conda environment with ${tool}`],
    };
  }

  /** `pip` is how to run pip for the environment: its own, or the base one with `--python`. */
  private pipInstall(pip: [string, ...string[]], dir: string): BuildCommand {
    return {
      title: "pip install",
      argv: [
        ...pip,
        "install",
        "--disable-pip-version-check",
        "--no-input",
        ...(this.options.pipArgs ?? []),
        "-r",
        join(dir, "requirements.txt"),
      ],
      cwd: dir,
    };
  }

  private basePythonInterpreter(hash: string): Promise<PythonInterpreter> {
    const command = this.options.python ?? "python3";
    this.basePython ??= probePython(command).then((found) => {
      if (!found)
        throw unsupported(`no python interpreter: '${command}' does not run (set TESSERA_PYTHON)`, hash);
      return found;
    });
    // A missing interpreter may be installed later: do not remember the failure.
    this.basePython.catch(() => {
      this.basePython = undefined;
    });
    return this.basePython;
  }

  private condaExecutable(): string | undefined {
    if (this.options.micromamba === false) return undefined;
    if (this.options.micromamba) return this.options.micromamba;
    if (this.condaTool === undefined)
      this.condaTool = findOnPath(["micromamba", "mamba", "conda"], this.options.env) ?? null;
    return this.condaTool ?? undefined;
  }
}

function baseOf(python: PythonInterpreter): { location: string; interpreter: string } {
  return { location: python.prefix, interpreter: python.executable };
}

function findOnPath(names: string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const name of names)
    for (const directory of (env.PATH ?? "").split(delimiter).filter(Boolean)) {
      const candidate = join(directory, name);
      try {
        accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // Not here.
      }
    }
  return undefined;
}
