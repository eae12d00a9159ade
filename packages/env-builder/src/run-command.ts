import { spawn } from "node:child_process";
import type { BuildLog } from "./build-log.js";
import { LineSplitter } from "./build-log.js";

/**
 * Variables a build may see. Builds run installer code chosen by the tenant (setup.py, npm
 * install scripts), so the platform's own environment (database URL, secrets) never reaches
 * them: only what locates tools, certificates, proxies and the installers' own settings.
 */
const PASSED_THROUGH =
  /^(PATH|HOME|USER|TMPDIR|TEMP|TMP|LANG|LANGUAGE|LC_[A-Z]+|TZ|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|PIP_[A-Z0-9_]+|NPM_CONFIG_[A-Z0-9_]+|npm_config_[a-z0-9_]+|CONDA_[A-Z0-9_]+|MAMBA_[A-Z0-9_]+|(HTTP|HTTPS|NO|ALL)_PROXY|(http|https|no|all)_proxy)$/;

export function buildEnvironmentVariables(source: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(source))
    if (value !== undefined && PASSED_THROUGH.test(key)) env[key] = value;
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
  // Installers must not stop to ask a question nobody can answer.
  env.PIP_NO_INPUT = "1";
  env.PYTHONDONTWRITEBYTECODE ??= "1";
  return env;
}

export interface BuildCommand {
  /** What this step does, for the log ("create the venv"). */
  title: string;
  argv: [string, ...string[]];
  cwd: string;
}

export type CommandOutcome = { ok: true } | { ok: false; reason: string };

/**
 * Runs one build step with its output streamed line by line into the build log. The step runs in
 * its own process group so a timeout kills the installer and everything it started.
 */
export function runBuildCommand(
  command: BuildCommand,
  log: BuildLog,
  opts: { env: Record<string, string>; deadline: number; signal: AbortSignal },
): Promise<CommandOutcome> {
  log.line(`$ ${command.argv.map(quoteForLog).join(" ")}`);
  if (opts.signal.aborted) return Promise.resolve({ ok: false, reason: `${command.title}: cancelled` });
  return new Promise((resolve) => {
    const child = spawn(command.argv[0], command.argv.slice(1), {
      cwd: command.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const out = new LineSplitter((line) => log.line(line));
    const err = new LineSplitter((line) => log.line(line));
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => out.push(chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => err.push(chunk));
    let timedOut = false;
    const timer = setTimeout(
      () => {
        timedOut = true;
        killGroup(child.pid);
      },
      Math.max(0, opts.deadline - Date.now()),
    );
    let cancelled = false;
    const cancel = () => {
      cancelled = true;
      killGroup(child.pid);
    };
    opts.signal.addEventListener("abort", cancel, { once: true });
    let spawnError: Error | undefined;
    child.on("error", (error) => {
      spawnError = error;
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      opts.signal.removeEventListener("abort", cancel);
      out.flush();
      err.flush();
      if (spawnError) {
        log.line(`! ${spawnError.message}`);
        resolve({
          ok: false,
          reason: `${command.title}: could not start ${command.argv[0]} (${spawnError.message})`,
        });
      } else if (timedOut) {
        resolve({ ok: false, reason: `${command.title}: timed out` });
      } else if (cancelled) {
        resolve({ ok: false, reason: `${command.title}: cancelled` });
      } else if (code === 0) {
        resolve({ ok: true });
      } else {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        resolve({ ok: false, reason: `${command.title}: ${command.argv[0]} ${how}` });
      }
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

function quoteForLog(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}
