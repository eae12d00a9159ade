import { join } from "node:path";
import { parseArgs } from "node:util";
import { CliError, createApiClient, describeApiError, settingsFromEnv } from "./client.js";
import { deploy } from "./commands/deploy.js";
import { scale } from "./commands/scale.js";
import { formatStatus, status } from "./commands/status.js";
import { deployCanary, type TrafficAction, traffic } from "./commands/traffic.js";
import { readManifest } from "./manifest.js";
import { currentOrg } from "./org.js";

const USAGE = `usage: tessera <command>

  deploy <dir> [--name N] [--app A] [--cluster C] [--runtime python|node] [--entry module:Class]
               [--detach] [--timeout SECONDS]
      bundle <dir> (with its tessera.json) and roll it out as the next revision, following progress;
      a tessera.json listing "deployments" deploys each of those subdirectories (an application);
      one with "rayServe": {"entry": "module:app"} deploys a Ray Serve application (every Ray
      deployment as a deployment of the application; --entry overrides it)
  status [--app A]
      every deployment with its version, state and ready/target replicas
  scale <app>/<deployment> --replicas N | --min N --max N [--target R]
      change replicas or autoscaling without a redeploy (--replicas 0 parks it)
  canary <dir> --percent P [--name N] [--app A]
      deploy <dir> as a canary beside the live revision, with P% of the requests
  traffic <app>/<deployment> [--percent P | --promote | --abort]
      show the traffic split, shift it, promote the canary (a rollout) or abort it

environment: TESSERA_API_KEY (required), TESSERA_API_URL (default http://127.0.0.1:3000),
             TESSERA_GATEWAY_URL (default http://127.0.0.1:8080)`;

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new CliError(`--${name} must be a whole number, not "${v}"`);
  return n;
}

function percent(v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0 || n > 100)
    throw new CliError(`--percent must be a number from 0 to 100, not "${v}"`);
  return n;
}

export async function main(argv: string[], print: (line: string) => void = console.log): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help") {
    print(USAGE);
    return command ? 0 : 2;
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      name: { type: "string" },
      app: { type: "string" },
      cluster: { type: "string" },
      runtime: { type: "string" },
      entry: { type: "string" },
      detach: { type: "boolean", default: false },
      timeout: { type: "string" },
      replicas: { type: "string" },
      min: { type: "string" },
      max: { type: "string" },
      target: { type: "string" },
      percent: { type: "string" },
      promote: { type: "boolean", default: false },
      abort: { type: "boolean", default: false },
    },
  });
  const settings = settingsFromEnv();
  const api = createApiClient(settings);
  const org = await currentOrg(api);
  switch (command) {
    case "deploy": {
      const dir = positionals[0];
      if (!dir) throw new CliError("tessera deploy <dir>: name the handler directory");
      const { deployments: stages, application } = await readManifest(dir);
      if (stages) {
        // An application directory: each deployment in turn (one revision each, version-aware).
        for (const stage of stages) {
          const r = await deploy(
            api,
            org,
            settings.gatewayUrl,
            {
              dir: join(dir, stage),
              application: values.app ?? application,
              cluster: values.cluster,
              detach: values.detach,
              timeoutS: int("timeout", values.timeout) ?? 600,
            },
            print,
          );
          if (r.state === "failed") return 1;
        }
        return 0;
      }
      const r = await deploy(
        api,
        org,
        settings.gatewayUrl,
        {
          dir,
          name: values.name,
          application: values.app,
          cluster: values.cluster,
          runtime: values.runtime,
          entry: values.entry,
          detach: values.detach,
          timeoutS: int("timeout", values.timeout) ?? 600,
        },
        print,
      );
      return r.state === "failed" ? 1 : 0;
    }
    case "status":
      print(formatStatus(await status(api, org, values.app)));
      return 0;
    case "scale": {
      const ref = positionals[0];
      if (!ref) throw new CliError("tessera scale <app>/<deployment>: name the deployment");
      const replicas = int("replicas", values.replicas);
      const min = int("min", values.min);
      const max = int("max", values.max);
      const target = values.target === undefined ? undefined : Number(values.target);
      if (replicas === undefined && (min === undefined || max === undefined))
        throw new CliError("give --replicas N, or --min N --max N");
      const dep = await scale(
        api,
        org,
        ref,
        replicas !== undefined
          ? { numReplicas: replicas }
          : { autoscaling: { minReplicas: min!, maxReplicas: max!, targetOngoingRequests: target } },
      );
      print(`${ref}: target ${dep.targetReplicas} replicas`);
      return 0;
    }
    case "canary": {
      const dir = positionals[0];
      if (!dir) throw new CliError("tessera canary <dir> --percent P: name the handler directory");
      if (values.percent === undefined) throw new CliError("give --percent P (0-100)");
      await deployCanary(
        api,
        org,
        { dir, percent: percent(values.percent), name: values.name, application: values.app },
        print,
      );
      return 0;
    }
    case "traffic": {
      const ref = positionals[0];
      if (!ref) throw new CliError("tessera traffic <app>/<deployment>: name the deployment");
      const chosen = [values.percent !== undefined, values.promote, values.abort].filter(Boolean).length;
      if (chosen > 1) throw new CliError("give one of --percent, --promote, --abort");
      const action: TrafficAction =
        values.percent !== undefined
          ? { percent: percent(values.percent) }
          : values.promote
            ? { promote: true }
            : values.abort
              ? { abort: true }
              : {};
      await traffic(api, org, ref, action, print);
      return 0;
    }
    default:
      throw new CliError(`unknown command "${command}"\n${USAGE}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("tessera.mjs")) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err instanceof CliError ? err.message : `tessera: ${describeApiError(err)}`);
      process.exit(1);
    },
  );
}
