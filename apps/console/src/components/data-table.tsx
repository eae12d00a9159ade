import type { ReactNode } from "react";

export interface Column<T> {
  header: string;
  cell: (row: T) => ReactNode;
}

/** A scrollable table (narrow screens scroll it sideways rather than squeezing it). */
export function DataTable<T>({
  rows,
  columns,
  rowKey,
  label,
  empty,
}: {
  /** Undefined while loading: nothing is rendered. */
  rows: T[] | undefined;
  columns: Column<T>[];
  rowKey: (row: T) => string | number;
  /** Accessible name of the table. */
  label: string;
  /** What an empty list says (an empty state that teaches the next step). */
  empty?: ReactNode;
}) {
  if (!rows) return null;
  if (rows.length === 0) return empty ? <p className="panel empty">{empty}</p> : null;
  return (
    <div className="panel table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            {columns.map((c, i) => (
              <th key={c.header || i} scope="col">
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={rowKey(r)}>
              {columns.map((c, i) => (
                <td key={c.header || i}>{c.cell(r)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
