/** A tiny sentiment "model" reading emphasis (exclamation marks, capitals, emoticons), batched. */
import { batch, route, type TesseraRequest } from "tessera";

function emphasis(text: string): number {
  const bangs = (text.match(/!/g) ?? []).length;
  const smiles = (text.match(/[:;]-?[)D]/g) ?? []).length;
  const frowns = (text.match(/:-?\(/g) ?? []).length;
  const letters = text.replace(/[^A-Za-z]/g, "");
  const shouting = letters.length > 3 && letters === letters.toUpperCase() ? 1 : 0;
  const raw = 0.5 * (smiles - frowns) + 0.2 * bangs * Math.sign(smiles - frowns || 1) - 0.3 * shouting;
  return Math.max(-1, Math.min(1, raw));
}

export class Emphasis {
  // Concurrent requests are scored in one call (a real model: one forward pass per batch).
  private readonly scoreBatch = batch(
    async (texts: string[]) =>
      texts.map((t) => ({ score: emphasis(t), model: "emphasis", batchSize: texts.length })),
    { maxBatchSize: 32, batchWaitTimeoutMs: 5 },
  );

  @route.post("/score")
  score(req: TesseraRequest<{ text: string }>) {
    return this.scoreBatch(String(req.body?.text ?? ""));
  }
}
