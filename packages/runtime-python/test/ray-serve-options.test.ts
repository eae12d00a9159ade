import { describe, expect, it } from "vitest";
import {
  mapRayServeOptions,
  planRayServeApplication,
  type RayServeApp,
  rayDeploymentSlug,
} from "../src/index.js";

const ENTRY = "service:app";

type Row = {
  what: string;
  options: Record<string, unknown>;
  config?: Record<string, unknown>;
  warning?: string;
  error?: [string, string];
  label?: string;
  prevLabel?: string;
};

/** Ray option -> Tessera config, the table the README's "Moving from Ray Serve" documents. */
const TABLE: Row[] = [
  { what: "num_replicas", options: { num_replicas: 3 }, config: { numReplicas: 3 } },
  {
    what: 'num_replicas="auto"',
    options: { num_replicas: "auto" },
    config: { autoscaling: { minReplicas: 1, maxReplicas: 100, targetOngoingRequests: 2 } },
  },
  {
    what: "autoscaling_config",
    options: {
      autoscaling_config: {
        min_replicas: 0,
        max_replicas: 5,
        initial_replicas: 1,
        target_ongoing_requests: 3,
        upscale_delay_s: 2,
        downscale_delay_s: 60,
      },
    },
    config: {
      autoscaling: {
        minReplicas: 0,
        maxReplicas: 5,
        initialReplicas: 1,
        targetOngoingRequests: 3,
        upscaleDelayS: 2,
        downscaleDelayS: 60,
      },
    },
  },
  {
    what: "older _autoscaling_config with target_num_ongoing_requests_per_replica",
    options: {
      _autoscaling_config: { min_replicas: 1, max_replicas: 2, target_num_ongoing_requests_per_replica: 4 },
    },
    config: { autoscaling: { minReplicas: 1, maxReplicas: 2, targetOngoingRequests: 4 } },
  },
  {
    what: "autoscaling smoothing knobs are ignored with a warning",
    options: { autoscaling_config: { min_replicas: 1, max_replicas: 2, smoothing_factor: 0.5 } },
    config: { autoscaling: { minReplicas: 1, maxReplicas: 2 } },
    warning: "autoscaling_config.smoothing_factor ignored",
  },
  {
    what: "actor resources: cpus, fractional gpus, memory in bytes",
    options: { ray_actor_options: { num_cpus: 2, num_gpus: 0.3, memory: 1.5 * 1024 * 1024 * 1024 } },
    config: { resources: { cpus: 2, gpus: 0.3, memoryMb: 1536 } },
  },
  {
    what: "num_cpus 0 becomes the smallest reservation",
    options: { ray_actor_options: { num_cpus: 0 } },
    config: { resources: { cpus: 0.1 } },
    warning: "at least 0.1 CPU",
  },
  {
    what: "runtime_env pip list",
    options: {
      ray_actor_options: { runtime_env: { pip: ["numpy==1.26.4", "./wheels/tool-1.0-py3-none-any.whl"] } },
    },
    config: {
      environment: { kind: "pip", requirements: ["numpy==1.26.4", "./wheels/tool-1.0-py3-none-any.whl"] },
    },
  },
  {
    what: "runtime_env pip dict",
    options: { ray_actor_options: { runtime_env: { pip: { packages: ["requests"], pip_check: false } } } },
    config: { environment: { kind: "pip", requirements: ["requests"] } },
  },
  {
    what: "runtime_env conda dict",
    options: {
      ray_actor_options: {
        runtime_env: {
          conda: { channels: ["conda-forge"], dependencies: ["python=3.11", { pip: ["numpy==1.20.2"] }] },
        },
      },
    },
    config: {
      environment: {
        kind: "conda",
        channels: ["conda-forge"],
        dependencies: ["python=3.11", { pip: ["numpy==1.20.2"] }],
      },
    },
  },
  {
    what: "runtime_env working_dir is the bundle",
    options: { ray_actor_options: { runtime_env: { working_dir: "." } } },
    config: {},
    warning: "runtime_env.working_dir ignored",
  },
  { what: "max_ongoing_requests", options: { max_ongoing_requests: 7 }, config: { maxOngoingRequests: 7 } },
  {
    what: "max_concurrent_queries (older name)",
    options: { max_concurrent_queries: 9 },
    config: { maxOngoingRequests: 9 },
  },
  { what: "max_queued_requests", options: { max_queued_requests: 20 }, config: { maxQueuedRequests: 20 } },
  {
    what: "max_queued_requests=-1 keeps the bounded default",
    options: { max_queued_requests: -1 },
    config: {},
    warning: "bounded default",
  },
  {
    what: "user_config",
    options: { user_config: { threshold: 0.5 } },
    config: { userConfig: { threshold: 0.5 } },
  },
  {
    what: "health checks",
    options: { health_check_period_s: 7, health_check_timeout_s: 3 },
    config: { healthCheck: { periodS: 7, timeoutS: 3 } },
  },
  {
    what: "version and prev_version",
    options: { version: "v2", prev_version: "v1" },
    label: "v2",
    prevLabel: "v1",
  },
  { what: "graceful shutdown", options: { graceful_shutdown_timeout_s: 20 }, warning: "drain timeout" },
  { what: "route_prefix", options: { route_prefix: "/api" }, warning: "route_prefix" },
  { what: "route_prefix /", options: { route_prefix: "/" }, config: {} },
  {
    what: "num_replicas with autoscaling_config",
    options: { num_replicas: 2, autoscaling_config: { min_replicas: 1, max_replicas: 2 } },
    error: ["num_replicas", "not both"],
  },
  {
    what: "placement groups",
    options: { placement_group_bundles: [{ CPU: 1 }] },
    error: ["placement_group_bundles", "placement groups"],
  },
  {
    what: "custom resources",
    options: { ray_actor_options: { resources: { TPU: 1 } } },
    error: ["ray_actor_options.resources", "not supported"],
  },
  {
    what: "runtime_env env_vars",
    options: { ray_actor_options: { runtime_env: { env_vars: { A: "1" } } } },
    error: ["ray_actor_options.runtime_env.env_vars", "use user_config"],
  },
  {
    what: "a named conda env",
    options: { ray_actor_options: { runtime_env: { conda: "my-env" } } },
    error: ["ray_actor_options.runtime_env.conda", "named or file-based"],
  },
  {
    what: "pip and conda together",
    options: { ray_actor_options: { runtime_env: { pip: ["a"], conda: { dependencies: ["b"] } } } },
    error: ["ray_actor_options.runtime_env", "not both"],
  },
  {
    what: "unknown autoscaling key",
    options: { autoscaling_config: { min_replicas: 1, max_replicas: 2, warp: 9 } },
    error: ["autoscaling_config.warp", "unknown"],
  },
  { what: "user_config not an object", options: { user_config: [1] }, error: ["user_config", "JSON object"] },
];

describe("mapRayServeOptions", () => {
  it.each(TABLE)("$what", (row) => {
    const mapped = mapRayServeOptions(row.options, ENTRY);
    if (row.error) {
      expect(mapped.errors[row.error[0]]).toContain(row.error[1]);
      return;
    }
    expect(mapped.errors).toEqual({});
    expect(mapped.config).toEqual({ runtime: "python", entry: ENTRY, ...(row.config ?? {}) });
    if (row.warning) expect(mapped.warnings.join("\n")).toContain(row.warning);
    else expect(mapped.warnings).toEqual([]);
    expect(mapped.label).toBe(row.label);
    expect(mapped.prevLabel).toBe(row.prevLabel);
  });
});

describe("rayDeploymentSlug", () => {
  it.each([
    ["CustomService", "custom-service"],
    ["HTTPIngress", "http-ingress"],
    ["model_v2", "model-v2"],
    ["__weird__", "weird"],
    ["X".repeat(80), "x".repeat(63)],
  ])("%s -> %s", (ray, slug) => expect(rayDeploymentSlug(ray)).toBe(slug));
});

function info(
  name: string,
  options: Record<string, unknown>,
  extra: Partial<RayServeApp["deployments"][0]> = {},
) {
  return {
    name,
    className: name,
    kind: "class" as const,
    http: "none" as const,
    routes: [],
    handles: [],
    options,
    hasReconfigure: false,
    hasCheckHealth: false,
    batched: [],
    problems: [],
    ...extra,
  };
}

describe("planRayServeApplication", () => {
  it("maps every deployment, validated, with its place in the graph", () => {
    const plan = planRayServeApplication(
      {
        ingress: "Ingress",
        deployments: [
          info("Model", { num_replicas: 2, ray_actor_options: { num_gpus: 0.5 } }),
          info("Ingress", { user_config: { a: 1 } }, { http: "call", handles: ["Model"] }),
        ],
        unsupportedCalls: [],
        stubbedModules: [],
      },
      { entry: ENTRY },
    );
    expect(plan.errors).toEqual({});
    expect(plan.ingress).toBe("ingress");
    expect(plan.deployments.map((d) => [d.rayName, d.name])).toEqual([
      ["Model", "model"],
      ["Ingress", "ingress"],
    ]);
    const handles = { Model: "model", Ingress: "ingress" };
    expect(plan.deployments[0]!.config).toMatchObject({
      numReplicas: 2,
      resources: { cpus: 1, gpus: 0.5, memoryMb: 512 },
      userConfig: { __ray_serve__: { deployment: "Model", handles } },
    });
    expect(plan.deployments[1]!.config.userConfig).toEqual({
      a: 1,
      __ray_serve__: { deployment: "Ingress", handles },
    });
  });

  it("collects option errors, config validation errors, problems and unsupported calls", () => {
    const plan = planRayServeApplication(
      {
        ingress: "A",
        deployments: [
          info(
            "A",
            { ray_actor_options: { num_gpus: 99 } },
            { problems: ["user_config is set but A has no reconfigure() method"] },
          ),
          info("B", { placement_group_strategy: "PACK" }),
        ],
        unsupportedCalls: [{ call: "serve.multiplexed", file: "app.py", line: 12 }],
        stubbedModules: [],
      },
      { entry: ENTRY },
    );
    expect(plan.errors).toEqual({
      "code.app.py:12": "serve.multiplexed is not supported on Tessera",
      "deployments.A.problem": "user_config is set but A has no reconfigure() method",
      "deployments.A.config.resources.gpus": expect.stringContaining("8"),
      "deployments.B.placement_group_strategy": "not supported: placement groups do not exist on Tessera",
    });
  });

  it("refuses two Ray names that become the same Tessera name", () => {
    const plan = planRayServeApplication(
      {
        ingress: "model_a",
        deployments: [info("ModelA", {}), info("model_a", {})],
        unsupportedCalls: [],
        stubbedModules: [],
      },
      { entry: ENTRY },
    );
    expect(plan.errors["deployments.model_a"]).toContain("model-a");
  });
});
