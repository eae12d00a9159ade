"use client";

import { createContext, type ReactNode, useContext } from "react";

export type Role = "owner" | "admin" | "member";

export interface OrgSummary {
  id: string;
  slug: string;
  name: string;
  personal: boolean;
  role: Role;
}

export interface ConsoleContext {
  org: OrgSummary;
  orgs: OrgSummary[];
  user: { email: string; name: string | null; isPlatformAdmin: boolean };
  /** Public base URL of the inference gateway, for endpoint URLs and curl examples. */
  gatewayUrl: string;
}

const Ctx = createContext<ConsoleContext | null>(null);

export function ConsoleContextProvider({ value, children }: { value: ConsoleContext; children: ReactNode }) {
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

/** The organisation the page is about (from the URL) and the signed-in user. */
export function useConsole(): ConsoleContext {
  const v = useContext(Ctx);
  if (!v) throw new Error("useConsole outside an organisation page");
  return v;
}

/** Mirrors the API's role ranks, only to hide controls the API would refuse anyway. */
export function atLeast(role: Role, min: Role): boolean {
  const rank = { member: 1, admin: 2, owner: 3 } as const;
  return rank[role] >= rank[min];
}
