"use client";

import { useState } from "react";
import { CopyButton } from "@/components/copy-button";
import { SelectField, TextArea, TextField } from "@/components/form";
import { useConsole } from "@/lib/org-context";

interface TryResult {
  url: string;
  status: number;
  latencyMs: number;
  body: string;
}

/** Endpoint URL, a ready-to-copy curl command, and a panel that sends one request through the gateway. */
export function Endpoint({ deploymentId, appName }: { deploymentId: string; appName: string }) {
  const { org, gatewayUrl } = useConsole();
  const base = `${gatewayUrl}/v1/${org.slug}/${appName}`;
  const [route, setRoute] = useState("");
  const [result, setResult] = useState<TryResult | null>(null);
  const [error, setError] = useState<{ message: string; fieldErrors: Record<string, string> } | null>(null);
  const [pending, setPending] = useState(false);
  const curl = `curl -s ${base}/${route || "<route>"} \\
  -H "authorization: Bearer $TESSERA_API_KEY" \\
  -H 'content-type: application/json' \\
  -d '{"rows":[{"a":1,"b":2},{"a":1,"b":3}],"columns":["a"]}'`;

  async function send(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setPending(true);
    setError(null);
    setResult(null);
    try {
      const res = await fetch("/api/try-it", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          orgId: org.id,
          deploymentId,
          apiKey: String(f.get("apiKey") ?? "").trim(),
          method: String(f.get("method")),
          path: String(f.get("path") ?? "").trim(),
          body: String(f.get("body") ?? ""),
        }),
      });
      const json = await res.json();
      if (!res.ok) setError(json.error ?? { message: `HTTP ${res.status}`, fieldErrors: {} });
      else setResult(json);
    } catch (err) {
      setError({ message: (err as Error).message, fieldErrors: {} });
    } finally {
      setPending(false);
    }
  }

  return (
    <section className="panel" aria-labelledby="endpoint-title">
      <h2 id="endpoint-title">Endpoint</h2>
      <p>
        <code data-testid="endpoint-url">{base}/&lt;route&gt;</code>
      </p>
      <pre data-testid="curl-example">{curl}</pre>
      <CopyButton text={curl} label="Copy curl" />
      <h3>Try it</h3>
      <form onSubmit={send} noValidate aria-label="Try it">
        <div className="grid2">
          <TextField
            label="API key"
            name="apiKey"
            type="password"
            autoComplete="off"
            placeholder="tsk_…"
            hint="Used for this request only; the console does not store it."
            error={error?.fieldErrors?.apiKey}
          />
          <SelectField label="Method" name="method" defaultValue="POST">
            <option>POST</option>
            <option>GET</option>
          </SelectField>
          <TextField
            label="Route"
            name="path"
            value={route}
            onChange={(e) => setRoute(e.target.value)}
            placeholder="deduplicate"
            error={error?.fieldErrors?.path}
          />
        </div>
        <TextArea
          label="JSON body"
          name="body"
          className="code"
          defaultValue={'{"rows":[{"a":1,"b":2},{"a":1,"b":3}],"columns":["a"]}'}
        />
        {error && !Object.keys(error.fieldErrors ?? {}).length ? (
          <p className="form-error">{error.message}</p>
        ) : null}
        <button type="submit" disabled={pending}>
          {pending ? "Sending…" : "Send request"}
        </button>
      </form>
      {result ? (
        <div role="status" data-testid="try-result">
          <p>
            <strong>HTTP {result.status || "—"}</strong> in{" "}
            <strong data-testid="try-latency">{result.latencyMs} ms</strong>{" "}
            <span className="muted">({result.url})</span>
          </p>
          <pre data-testid="try-body">{result.body}</pre>
        </div>
      ) : null}
    </section>
  );
}
