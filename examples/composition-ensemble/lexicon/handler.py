"""A word-list sentiment "model" with batched scoring (stand-in for a real classifier)."""

from typing import List

from tessera import HTTPError, batch, route

POSITIVE = {"good", "great", "love", "excellent", "happy", "fast", "nice", "awesome", "thanks"}
NEGATIVE = {"bad", "terrible", "hate", "slow", "broken", "awful", "sad", "angry", "worst"}
NEGATIONS = {"not", "never", "no", "hardly"}


def lexicon_score(text: str) -> float:
    score, flip = 0, False
    for raw in text.lower().split():
        word = raw.strip(".,!?;:()\"'")
        if word in NEGATIONS:
            flip = True
            continue
        polarity = (word in POSITIVE) - (word in NEGATIVE)
        score += -polarity if flip else polarity
        if polarity:
            flip = False
    return max(-1.0, min(1.0, score / 3))


class Lexicon:
    @batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score_batch(self, texts: List[str]) -> List[dict]:
        return [{"score": lexicon_score(t), "model": "lexicon", "batchSize": len(texts)} for t in texts]

    @route.post("/score")
    async def score(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise HTTPError(400, "body must be an object with a string 'text'", "VALIDATION_FAILED")
        return await self.score_batch(body["text"])
