/** A timestamp from the API (ISO string over JSON) as local date and time; "—" when absent. */
export function When({ at }: { at: string | Date | null | undefined }) {
  if (!at) return <span className="muted">—</span>;
  const d = new Date(at);
  return <time dateTime={d.toISOString()}>{d.toLocaleString()}</time>;
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}
