"""The chain's model: a keyword topic classifier with batched inference, and a token streamer."""

import asyncio
from typing import Dict, List

from tessera import HTTPError, batch, route

TOPICS: Dict[str, List[str]] = {
    "billing": ["invoice", "refund", "charge", "price", "payment", "bill"],
    "outage": ["down", "error", "timeout", "outage", "broken", "crash"],
    "praise": ["thanks", "great", "love", "awesome", "excellent"],
}


def classify(text: str) -> Dict[str, float]:
    words = text.split()
    hits = {topic: sum(w.strip(".,!?") in keys for w in words) for topic, keys in TOPICS.items()}
    total = sum(hits.values())
    return {topic: (n / total if total else 0.0) for topic, n in hits.items()}


class Model:
    def __init__(self, config):
        self.token_delay_s = float(config.get("tokenDelayMs", 20)) / 1000

    @batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict_batch(self, texts: List[str]) -> List[dict]:
        # A real model would run one forward pass over the whole batch here.
        out = []
        for text in texts:
            scores = classify(text)
            best = max(scores, key=lambda t: scores[t])
            out.append({"topic": best if scores[best] > 0 else "other", "scores": scores,
                        "batchSize": len(texts)})
        return out

    @route.post("/predict")
    async def predict(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise HTTPError(400, "body must be an object with a string 'text'", "VALIDATION_FAILED")
        return await self.predict_batch(body["text"])

    @route.post("/generate", stream="sse")
    async def generate(self, body):
        scores = classify(body["prompt"])
        best = max(scores, key=lambda t: scores[t])
        reply = "this sounds like a %s question: %s" % (best if scores[best] > 0 else "general", body["prompt"])
        for token in reply.split(" "):
            yield token
            await asyncio.sleep(self.token_delay_s)
