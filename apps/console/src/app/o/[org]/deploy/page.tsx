"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useRouter } from "next/navigation";
import { useState } from "react";
import { FormError, SelectField, TextArea, TextField } from "@/components/form";
import { numberField, ScalingFields, type ScalingMode, scalingFromForm } from "@/components/scaling-fields";
import { Loading } from "@/components/when";
import { bundleFromUploads, type CodeBundleInput } from "@/lib/code-bundle";
import { type EnvKind, EnvTextError, environmentFromText } from "@/lib/environment-text";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

const ENV_HINT: Record<EnvKind, string> = {
  none: "",
  pip: "One requirement per line, or paste a requirements.txt.",
  npm: "One name@range per line, or paste a package.json.",
  conda: "Paste an environment.yml (channels, dependencies, nested pip) or Ray's conda JSON.",
};

type Errors = Record<string, string>;

/** The first API field error whose path is `key` or lies under it. */
function errorAt(errors: Errors, ...keys: string[]): string | undefined {
  for (const key of keys)
    for (const [k, v] of Object.entries(errors)) if (k === key || k.startsWith(`${key}.`)) return v;
  return undefined;
}

export default function DeployPage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const router = useRouter();
  const input = { orgId: org.id };
  const clusters = useQuery(trpc.clusters.list.queryOptions(input));
  const apps = useQuery(trpc.applications.list.queryOptions(input));
  const deployments = useQuery(trpc.deployments.list.queryOptions(input));
  const createCluster = useMutation(
    trpc.clusters.create.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.clusters.list.queryKey(input) }),
    }),
  );
  const createApp = useMutation(trpc.applications.create.mutationOptions());
  const deploy = useMutation(trpc.deployments.deploy.mutationOptions());
  const [runtime, setRuntime] = useState<"python" | "node">("python");
  const [codeSource, setCodeSource] = useState<"editor" | "upload">("editor");
  const [envKind, setEnvKind] = useState<EnvKind>("none");
  const [scalingMode, setScalingMode] = useState<ScalingMode>("fixed");
  const [localErrors, setLocalErrors] = useState<Errors>({});
  const [submitting, setSubmitting] = useState(false);

  const apiErr = shownError(deploy.error);
  const errors: Errors = { ...(apiErr?.fieldErrors ?? {}), ...localErrors };
  const canDeploy = atLeast(org.role, "admin");

  if (clusters.isLoading || apps.isLoading) return <Loading what="the deploy form" />;
  if (!canDeploy)
    return (
      <>
        <h1>Deploy</h1>
        <p className="panel muted">Deploying takes the admin or owner role in {org.name}.</p>
      </>
    );
  if (clusters.data && clusters.data.length === 0)
    return (
      <>
        <h1>Deploy a handler</h1>
        <div className="panel">
          <p>
            Deployments run in a cluster. Create one with the default quota (8 CPUs, 16 GB, 20 replicas) to
            start.
          </p>
          <FormError error={shownError(createCluster.error)} />
          <button
            type="button"
            disabled={createCluster.isPending}
            onClick={() => createCluster.mutate({ ...input, name: "main" })}
          >
            Create cluster “main”
          </button>{" "}
          <Link href={`/o/${org.slug}/clusters`}>or choose name and quota</Link>
        </div>
      </>
    );

  async function submit(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    deploy.reset();
    createApp.reset();
    const f = new FormData(e.currentTarget);
    const problems: Errors = {};
    const clusterId = String(f.get("clusterId") ?? "");
    const appName = String(f.get("application") ?? "").trim();
    const name = String(f.get("name") ?? "").trim();

    let code: CodeBundleInput | undefined;
    try {
      if (codeSource === "editor") {
        const fileName = String(f.get("fileName") ?? "").trim();
        const source = String(f.get("source") ?? "");
        if (!fileName) problems.fileName = "give the file a name, e.g. handler.py";
        if (!source.trim()) problems["code.files"] = "paste your handler's code";
        code = { encoding: "utf8", files: { [fileName]: source } };
      } else {
        const uploads = (f.getAll("upload") as File[]).filter((x) => x.size > 0 || x.name);
        if (uploads.length === 0) problems["code.files"] = "choose files or a .zip";
        else code = await bundleFromUploads(uploads);
      }
    } catch (err) {
      problems["code.files"] = (err as Error).message;
    }

    let environment: unknown;
    try {
      const python = String(f.get("python") ?? "").trim();
      environment = environmentFromText(envKind, String(f.get("envText") ?? ""), python || undefined);
    } catch (err) {
      if (err instanceof EnvTextError) problems["config.environment"] = err.message;
      else throw err;
    }
    setLocalErrors(problems);
    if (Object.keys(problems).length > 0) return;

    const config = {
      runtime,
      entry: String(f.get("entry") ?? "").trim(),
      environment,
      resources: {
        cpus: numberField(f.get("cpus")),
        gpus: numberField(f.get("gpus")),
        memoryMb: numberField(f.get("memoryMb")),
      },
      maxOngoingRequests: numberField(f.get("maxOngoingRequests")),
      ...scalingFromForm(f, scalingMode),
    };

    setSubmitting(true);
    try {
      let app = apps.data?.find((a) => a.name === appName);
      if (app && app.clusterId !== clusterId) {
        setLocalErrors({
          application: "this application lives in another cluster; pick that cluster or a new name",
        });
        return;
      }
      if (!app) {
        try {
          app = await createApp.mutateAsync({ ...input, clusterId, name: appName });
        } catch (err) {
          const fe = shownError(err)?.fieldErrors ?? {};
          setLocalErrors({ application: fe.name ?? fe.clusterId ?? shownError(err)?.message ?? "invalid" });
          return;
        }
        await qc.invalidateQueries({ queryKey: trpc.applications.list.queryKey(input) });
      }
      const existing = deployments.data?.find((d) => d.applicationId === app!.id && d.name === name);
      const result = await deploy
        .mutateAsync({
          ...input,
          applicationId: app.id,
          name,
          config,
          code,
          prevVersion: existing?.version ?? 0,
        })
        .catch(() => null);
      if (result) router.push(`/o/${org.slug}/deployments/${result.deployment.id}?job=${result.jobId}`);
    } finally {
      setSubmitting(false);
    }
  }

  const clusterOptions = clusters.data ?? [];
  return (
    <>
      <h1>Deploy a handler</h1>
      <form onSubmit={submit} noValidate aria-label="Deploy a handler">
        <div className="panel">
          <h2>Where</h2>
          <div className="grid2">
            <SelectField label="Cluster" name="clusterId" error={errors.clusterId}>
              {clusterOptions.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name} ({c.state})
                </option>
              ))}
            </SelectField>
            <TextField
              label="Application"
              name="application"
              list="existing-apps"
              defaultValue={apps.data?.[0]?.name ?? "demo"}
              hint="An existing application, or a new name: lower-case letters, digits and '-'."
              error={errors.application ?? errors.applicationId}
            />
            <datalist id="existing-apps">
              {apps.data?.map((a) => (
                <option key={a.id} value={a.name} />
              ))}
            </datalist>
            <TextField
              label="Deployment name"
              name="name"
              defaultValue="handler"
              hint="Deploying an existing name creates its next revision."
              error={errors.name ?? errors.prevVersion}
            />
          </div>
        </div>

        <div className="panel">
          <h2>Code</h2>
          <div className="grid2">
            <SelectField
              label="Runtime"
              name="runtime"
              value={runtime}
              onChange={(e) => setRuntime(e.target.value as "python" | "node")}
              error={errorAt(errors, "config.runtime")}
            >
              <option value="python">Python</option>
              <option value="node">Node.js (TypeScript)</option>
            </SelectField>
            <TextField
              label="Entry"
              name="entry"
              placeholder={runtime === "python" ? "handler:Dataframe" : "handler.ts:Dataframe"}
              hint="module:Class — the class whose methods become routes."
              error={errorAt(errors, "config.entry")}
            />
          </div>
          <fieldset className="row" style={{ border: "none", padding: 0 }}>
            <legend className="muted">Code source</legend>
            <label>
              <input
                type="radio"
                name="codeSource"
                checked={codeSource === "editor"}
                onChange={() => setCodeSource("editor")}
              />{" "}
              Editor
            </label>
            <label>
              <input
                type="radio"
                name="codeSource"
                checked={codeSource === "upload"}
                onChange={() => setCodeSource("upload")}
              />{" "}
              Upload files or a .zip
            </label>
          </fieldset>
          {codeSource === "editor" ? (
            <>
              <TextField
                label="File name"
                name="fileName"
                key={runtime}
                defaultValue={runtime === "python" ? "handler.py" : "handler.ts"}
                error={errors.fileName}
              />
              <TextArea
                label="Source"
                name="source"
                className="code"
                placeholder={
                  runtime === "python"
                    ? "class Dataframe:\n    def deduplicate(self, body): ..."
                    : "export class Dataframe { ... }"
                }
                error={errorAt(errors, "code")}
              />
            </>
          ) : (
            <TextField label="Files" name="upload" type="file" multiple error={errorAt(errors, "code")} />
          )}
        </div>

        <div className="panel">
          <h2>Environment</h2>
          <div className="grid2">
            <SelectField
              label="Environment kind"
              name="envKind"
              value={envKind}
              onChange={(e) => setEnvKind(e.target.value as EnvKind)}
              error={errors["config.environment.kind"]}
            >
              <option value="none">None (standard library only)</option>
              <option value="pip">pip</option>
              <option value="conda">conda</option>
              <option value="npm">npm</option>
            </SelectField>
            {envKind === "pip" ? (
              <TextField label="Python version (optional)" name="python" placeholder="3.11" />
            ) : null}
          </div>
          {envKind !== "none" ? (
            <TextArea
              label="Packages"
              name="envText"
              className="code"
              hint={ENV_HINT[envKind]}
              error={
                Object.entries(errors).find(
                  ([k]) => k.startsWith("config.environment") && k !== "config.environment.kind",
                )?.[1]
              }
            />
          ) : null}
        </div>

        <div className="panel">
          <h2>Resources and scaling</h2>
          <div className="grid2">
            <TextField
              label="CPUs per replica"
              name="cpus"
              type="number"
              step="0.1"
              defaultValue="0.5"
              error={errors["config.resources.cpus"]}
            />
            <TextField
              label="GPUs per replica"
              name="gpus"
              type="number"
              step="0.1"
              defaultValue="0"
              error={errors["config.resources.gpus"]}
            />
            <TextField
              label="Memory per replica (MB)"
              name="memoryMb"
              type="number"
              defaultValue="256"
              error={errors["config.resources.memoryMb"]}
            />
            <TextField
              label="Max ongoing requests per replica"
              name="maxOngoingRequests"
              type="number"
              defaultValue="8"
              error={errors["config.maxOngoingRequests"]}
            />
          </div>
          <ScalingFields mode={scalingMode} onMode={setScalingMode} errors={errors} errorPrefix="config." />
        </div>
        {apiErr ? (
          <p className="form-error" role="alert">
            {Object.keys(apiErr.fieldErrors).length ? "Check the highlighted fields. " : ""}
            {apiErr.message}
          </p>
        ) : null}
        <button type="submit" disabled={submitting}>
          {submitting ? "Deploying…" : "Deploy"}
        </button>
      </form>
    </>
  );
}
