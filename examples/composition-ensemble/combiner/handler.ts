/**
 * The ensemble's ingress: fans a text out to two sentiment models (`lexicon` in python,
 * `emphasis` in TypeScript), each its own deployment with its own runtime and scaling, and
 * combines their scores. `/route` shows dynamic selection: a dispatcher picks one model per request.
 */
import { HandleError, type Handles, HttpError, route, type TesseraRequest } from "tessera";

const MODELS = ["lexicon", "emphasis"] as const;
type Model = (typeof MODELS)[number];
interface Score {
  score: number;
  model: string;
}

function textOf(req: TesseraRequest): string {
  const text = (req.body as { text?: unknown } | undefined)?.text;
  if (typeof text !== "string" || !text.trim())
    throw new HttpError(400, "body must be an object with a non-empty string 'text'", "VALIDATION_FAILED");
  return text;
}

export class Combiner {
  declare handles: Handles;
  private readonly weights: Record<Model, number>;

  constructor(config: { weights?: Partial<Record<Model, number>> }) {
    this.weights = { lexicon: 0.7, emphasis: 0.3, ...config.weights };
  }

  @route.post("/sentiment")
  async sentiment(req: TesseraRequest) {
    const text = textOf(req);
    // Fan out: both models work at once; a failing model degrades the answer instead of failing it.
    const settled = await Promise.allSettled(
      MODELS.map((m) => this.handles.get(m).call<Score>("/score", { text }, { timeoutMs: 5000 })),
    );
    const scores: Partial<Record<Model, number>> = {};
    const failed: Record<string, string> = {};
    settled.forEach((s, i) => {
      const model = MODELS[i]!;
      if (s.status === "fulfilled") scores[model] = s.value.score;
      else failed[model] = s.reason instanceof HandleError ? s.reason.message : String(s.reason);
    });
    const used = Object.keys(scores) as Model[];
    if (used.length === 0) throw new HttpError(502, "no model answered", "UPSTREAM_ERROR");
    const weight = used.reduce((sum, m) => sum + this.weights[m], 0);
    const combined = used.reduce((sum, m) => sum + scores[m]! * this.weights[m], 0) / weight;
    return {
      label: combined > 0.1 ? "positive" : combined < -0.1 ? "negative" : "neutral",
      combined: Math.round(combined * 1000) / 1000,
      scores,
      ...(Object.keys(failed).length ? { failed } : {}),
    };
  }

  @route.post("/route")
  async pick(req: TesseraRequest) {
    const text = textOf(req);
    // Dynamic selection: short texts go to the cheap model, longer ones to the lexicon.
    const model: Model = text.length < 40 ? "emphasis" : "lexicon";
    const result = await this.handles.get(model).call<Score>("/score", { text });
    return { ...result, model };
  }
}
