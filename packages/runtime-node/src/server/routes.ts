import { routesOf, type StreamMode } from "../api.js";

export interface Route {
  method: string;
  path: string;
  stream?: StreamMode;
  methodName: string;
  pattern: RegExp;
  paramNames: string[];
}

type StaticRouteTarget = string | { method: string; stream?: StreamMode };

const PARAM = /\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}/g;
const HTTP_METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE"]);

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function compilePath(path: string): { pattern: RegExp; paramNames: string[] } {
  const paramNames: string[] = [];
  let source = "^";
  let pos = 0;
  for (const m of path.matchAll(PARAM)) {
    source += escapeRegExp(path.slice(pos, m.index));
    paramNames.push(m[1]!);
    source += m[2] === "path" ? `(?<${m[1]}>.+)` : `(?<${m[1]}>[^/]+)`;
    pos = m.index! + m[0].length;
  }
  source += `${escapeRegExp(path.slice(pos))}$`;
  return { pattern: new RegExp(source), paramNames };
}

/** Routes of a handler class: decorated methods (whole prototype chain) plus `static routes`. */
export function collectRoutes(cls: new (...args: any[]) => unknown): Route[] {
  const routes: Route[] = [];
  const add = (method: string, path: string, methodName: string, stream?: StreamMode) => {
    if (!HTTP_METHODS.has(method)) throw new TypeError(`unsupported HTTP method ${method} for ${path}`);
    if (!path.startsWith("/") || path.startsWith("/-/"))
      throw new TypeError(`route path must start with '/' and not be under /-/, got ${path}`);
    if (routes.some((r) => r.method === method && r.path === path))
      throw new TypeError(`two methods declare the route ${method} ${path}`);
    routes.push({ method, path, methodName, ...(stream ? { stream } : {}), ...compilePath(path) });
  };
  const seen = new Set<string>();
  for (let proto = cls.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === "constructor" || seen.has(name)) continue;
      const desc = Object.getOwnPropertyDescriptor(proto, name);
      const specs = routesOf(desc?.value);
      if (specs.length === 0) continue;
      seen.add(name);
      for (const s of specs) add(s.method, s.path, name, s.stream);
    }
  }
  const table = (cls as unknown as { routes?: Record<string, StaticRouteTarget> }).routes;
  if (table !== undefined) {
    if (typeof table !== "object" || table === null) throw new TypeError("static routes must be an object");
    for (const [key, target] of Object.entries(table)) {
      const m = /^([A-Za-z]+)\s+(\/\S*)$/.exec(key.trim());
      if (!m)
        throw new TypeError(`static routes key must look like "POST /path", got ${JSON.stringify(key)}`);
      const methodName = typeof target === "string" ? target : target?.method;
      if (typeof methodName !== "string" || typeof cls.prototype[methodName] !== "function")
        throw new TypeError(`static routes: ${key} names no method of ${cls.name}`);
      add(m[1]!.toUpperCase(), m[2]!, methodName, typeof target === "string" ? undefined : target.stream);
    }
  }
  // Literal paths before parameterised ones, so `/items/new` beats `/items/{id}`.
  routes.sort(
    (a, b) =>
      Number(a.paramNames.length > 0) - Number(b.paramNames.length > 0) || b.path.length - a.path.length,
  );
  return routes;
}

export function matchRoute(
  routes: Route[],
  method: string,
  path: string,
): { route?: Route; params: Record<string, string>; allowed: string[] } {
  const allowed: string[] = [];
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    if (r.method === method || (method === "HEAD" && r.method === "GET")) {
      const params: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.groups ?? {})) params[k] = v;
      return { route: r, params, allowed: [] };
    }
    allowed.push(r.method);
  }
  return { params: {}, allowed };
}
