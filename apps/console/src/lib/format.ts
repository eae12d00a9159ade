/** Number formats shared by the billing, uptime and monitoring pages. */

/** US dollars; sub-cent amounts keep enough digits to not read as zero. */
export function usd(amount: number): string {
  const digits = amount !== 0 && Math.abs(amount) < 0.01 ? 4 : 2;
  return new Intl.NumberFormat("en-US", {
    style: "currency",
    currency: "USD",
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  }).format(amount);
}

/** A ratio as a percentage; "—" when nothing was measured. */
export function percent(ratio: number | null | undefined, digits = 2): string {
  return ratio === null || ratio === undefined ? "—" : `${(ratio * 100).toFixed(digits)}%`;
}

export function count(n: number): string {
  return new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 }).format(n);
}

export function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${count(v)} ms`;
}

/** A plan limit; null means the plan has none. */
export const limit = (v: number | null) => (v === null ? "unlimited" : count(v));
