import { REVISION_HEADER } from "@tessera/core";
import { bundleDirectory } from "../bundle.js";
import { type ApiClient, CliError } from "../client.js";
import { MANIFEST_FILE, readManifest } from "../manifest.js";
import type { OrgInfo } from "../org.js";
import { findDeployment } from "./scale.js";

/**
 * Deploys a directory as a canary of its existing deployment (named by its tessera.json or the
 * flags): a new revision that gets `percent` of the requests beside the live one.
 */
export async function deployCanary(
  api: ApiClient,
  org: OrgInfo,
  o: { dir: string; percent: number; name?: string; application?: string },
  print: (line: string) => void,
) {
  const code = await bundleDirectory(o.dir);
  const manifest = await readManifest(o.dir);
  const name = o.name ?? manifest.name;
  const appName = o.application ?? manifest.application ?? name;
  if (!name) throw new CliError(`name the deployment: --name, or "name" in ${MANIFEST_FILE}`);
  const dep = await findDeployment(api, org, `${appName}/${name}`);
  const r = await api.traffic.deployCanary.mutate({
    orgId: org.id,
    deploymentId: dep.id,
    config: manifest.config,
    code,
    prevVersion: dep.version,
    percent: o.percent,
  });
  print(
    `canary ${appName}/${name} revision ${r.revision.version} gets ${o.percent}% of the requests ` +
      `(pin one with ${REVISION_HEADER}: ${r.revision.version})`,
  );
  return r;
}

export type TrafficAction = { percent: number } | { promote: true } | { abort: true } | Record<string, never>;

/** Shows the split of `app/deployment`, or shifts, promotes or aborts its canary. */
export async function traffic(
  api: ApiClient,
  org: OrgInfo,
  ref: string,
  action: TrafficAction,
  print: (line: string) => void,
) {
  const dep = await findDeployment(api, org, ref);
  const ids = { orgId: org.id, deploymentId: dep.id };
  if ("percent" in action) await api.traffic.setWeight.mutate({ ...ids, percent: action.percent });
  else if ("promote" in action) {
    const r = await api.traffic.promote.mutate({ ...ids, prevVersion: dep.version });
    print(`${ref}: promoting revision ${r.revision.version} (rolling out)`);
    return;
  } else if ("abort" in action) {
    await api.traffic.abort.mutate(ids);
    print(`${ref}: canary aborted, all requests to the live revision`);
    return;
  }
  const split = await api.traffic.get.query(ids);
  const live = split.live ? `revision ${split.live.version}` : "nothing live";
  if (!split.canary) print(`${ref}: ${live} takes all requests`);
  else
    print(
      `${ref}: ${live} ${100 - split.canary.percent}%, canary revision ${split.canary.revision?.version ?? "?"} ${split.canary.percent}%`,
    );
  const versions = new Map(
    [split.live, split.canary?.revision].filter((r) => !!r).map((r) => [r!.id, r!.version]),
  );
  for (const s of split.stats.filter((x) => x.requests > 0))
    print(
      `  revision ${versions.get(s.revisionId) ?? "?"}: ${s.requests} requests, ${s.errors} errors, ` +
        `p50 ${s.p50Ms ?? "-"} ms, p95 ${s.p95Ms ?? "-"} ms`,
    );
}
