"""The chain's ingress: normalises the text, then hands it to the `model` deployment.

Both stages are deployments of the application `chain`: each scales on its own traffic, and the
call between them goes through the gateway with a handle (never by address).
"""

import asyncio
import re
import unicodedata

from tessera import HTTPError, route

_SPACES = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub(" ", text)
    return _SPACES.sub(" ", text).strip().lower()


def text_of(body, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise HTTPError(400, "body must be an object with a non-empty string %r" % key, "VALIDATION_FAILED")
    return value


class Preprocess:
    @route.post("/classify")
    async def classify(self, body):
        text = normalise(text_of(body, "text"))
        prediction = await self.handles.model.call("/predict", {"text": text})
        return {"normalised": text, **prediction}

    @route.post("/classify-many")
    async def classify_many(self, body):
        texts = body.get("texts") if isinstance(body, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise HTTPError(400, "body must be an object with a list of strings 'texts'", "VALIDATION_FAILED")
        # Concurrent calls: the model's @batch collects them into few batched calls.
        return await asyncio.gather(*(self.handles.model.call("/predict", {"text": normalise(t)}) for t in texts))

    @route.post("/generate", stream="sse")
    async def generate(self, body):
        prompt = normalise(text_of(body, "prompt"))
        # Tokens pass through as the model produces them: no buffering on the way.
        async for token in self.handles.model.stream("/generate", {"prompt": prompt}):
            yield token
