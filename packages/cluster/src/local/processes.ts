import { readdirSync, readFileSync } from "node:fs";

/** What identifies one process over its lifetime: pids are reused, (pid, start time) is not. */
export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot at which the process started. */
  startTime: string;
}

interface ProcStat {
  state: string;
  pgrp: number;
  startTime: string;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const [state, , pgrp] = rest;
  const startTime = rest[19];
  if (!state || !pgrp || !startTime) return undefined;
  return { state, pgrp: Number(pgrp), startTime };
}

/** The identity of a running process, or undefined when it is gone (or a zombie). */
export function processIdentity(pid: number): ProcessIdentity | undefined {
  const stat = readProcStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X") return undefined;
  return { pid, startTime: stat.startTime };
}

/** True while exactly that process (not a later one reusing its pid) is alive. */
export function isSameProcessAlive(id: ProcessIdentity): boolean {
  return processIdentity(id.pid)?.startTime === id.startTime;
}

/**
 * Signals the process group a replica leads (replicas are spawned as session leaders, so the
 * group holds the runtime and anything tenant code started). Refuses when the pid now belongs to
 * another process, so a recycled pid is never signalled.
 */
export function signalReplicaGroup(id: ProcessIdentity, signal: NodeJS.Signals): boolean {
  const stat = readProcStat(id.pid);
  if (!stat || stat.startTime !== id.startTime) return false;
  try {
    process.kill(stat.pgrp === id.pid ? -id.pid : id.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGKILLs what is left of a process group whose leader exited: processes tenant code started that
 * ignored the SIGTERM. Members are found in /proc and signalled by pid, never by `kill(-pgid)`: an
 * empty group's id may already be a new process's.
 */
export function killGroupMembers(pgid: number): number {
  let killed = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || readProcStat(Number(entry))?.pgrp !== pgid) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
      killed += 1;
    } catch {
      // exited meanwhile
    }
  }
  return killed;
}

/**
 * SIGKILLs every process whose real uid is `uid`: a per-cluster user's processes, including those
 * tenant code moved out of its replica's process group (setsid). Returns how many were signalled.
 */
export function killProcessesOfUser(uid: number): number {
  let killed = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, "utf8");
    } catch {
      continue;
    }
    const realUid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (realUid !== String(uid)) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
      killed += 1;
    } catch {
      // exited meanwhile
    }
  }
  return killed;
}

/** CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status), e.g. [0, 1, 2, 3]. */
export function allowedCpus(): number[] {
  try {
    const line = readFileSync("/proc/self/status", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Cpus_allowed_list:"));
    if (!line) return [];
    const cpus: number[] = [];
    for (const part of line.split(":")[1]!.trim().split(",")) {
      const [from, to] = part.split("-").map(Number);
      if (from === undefined || !Number.isInteger(from)) continue;
      for (let c = from; c <= (to ?? from); c++) cpus.push(c);
    }
    return cpus;
  } catch {
    return [];
  }
}
