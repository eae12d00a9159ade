"use client";

import { type QueryKey, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";

interface PageOptions<T> {
  queryKey: QueryKey;
  queryFn?: unknown;
  // The page shape every log procedure of the API answers.
  _page?: { lines: T[]; nextSinceId: number };
}

/**
 * Follows a log: fetches the lines after the last id seen (`sinceId`) every 1.5 s while
 * `active`, appending them (the newest 2000 kept). A new `key` (other filters) starts over.
 */
export function useLogTail<T>(
  optionsFor: ((sinceId: number) => PageOptions<T>) | null,
  key: string,
  active: boolean,
): T[] {
  const qc = useQueryClient();
  const [lines, setLines] = useState<T[]>([]);
  const optionsRef = useRef(optionsFor);
  optionsRef.current = optionsFor;
  // biome-ignore lint/correctness/useExhaustiveDependencies: `key` names the filters: a new one restarts the tail
  useEffect(() => {
    let since = 0;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setLines([]);
    const tick = async () => {
      const make = optionsRef.current;
      if (!make) return;
      const page = (await qc
        .fetchQuery({ ...(make(since) as object), staleTime: 0 } as Parameters<typeof qc.fetchQuery>[0])
        .catch(() => null)) as { lines: T[]; nextSinceId: number } | null;
      if (stopped) return;
      if (page && page.lines.length > 0) {
        since = page.nextSinceId;
        setLines((prev) => [...prev, ...page.lines].slice(-2000));
      }
      if (active) timer = setTimeout(tick, 1_500);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [qc, key, active]);
  return lines;
}
