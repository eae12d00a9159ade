export type LogLevel = "info" | "warn" | "error";
export type Log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** JSON lines on stdout/stderr, like the other Tessera processes. */
export const jsonLog: Log = (level, msg, fields) => {
  const line = JSON.stringify({ level, component: "gateway", msg, ...fields });
  if (level === "info") console.log(line);
  else console.error(line);
};
