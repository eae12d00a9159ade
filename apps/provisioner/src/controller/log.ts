export type Log = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;

export function componentLog(component: string): Log {
  return (level, msg, fields) => {
    const line = JSON.stringify({ level, component, msg, ...fields });
    if (level === "info") console.log(line);
    else console.error(line);
  };
}
