"""Model composition in Ray Serve: an ingress that chains a preprocessor and an ensemble of two
models through handles, and a batched model. Plain Ray Serve 2.x code, unchanged for Tessera.
"""

import asyncio
from typing import Dict, List

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.25})
class Preprocessor:
    def normalise(self, text: str) -> List[str]:
        return [w for w in text.lower().split() if w]


@serve.deployment(
    autoscaling_config={"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 2,
                        "upscale_delay_s": 1, "downscale_delay_s": 30},
    ray_actor_options={"num_cpus": 0.5, "memory": 300 * 1024 * 1024},
    max_ongoing_requests=8,
)
class LengthModel:
    def __init__(self, weight: float):
        self.weight = weight
        self.batch_sizes: List[int] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.2)
    async def score(self, words_batch: List[List[str]]) -> List[float]:
        self.batch_sizes.append(len(words_batch))
        return [self.weight * sum(len(w) for w in words) for words in words_batch]

    def stats(self) -> Dict:
        return {"batches": list(self.batch_sizes)}


@serve.deployment(_autoscaling_config={"min_replicas": 1, "max_replicas": 2,
                                       "target_num_ongoing_requests_per_replica": 4},
                  max_concurrent_queries=16)
class CountModel:
    def score(self, words: List[str]) -> float:
        return float(len(words))


@serve.deployment
class Ingress:
    def __init__(self, pre: DeploymentHandle, models: Dict[str, DeploymentHandle]):
        self.pre = pre
        self.models = models

    async def __call__(self, request: Request) -> Dict:
        if request.url.path == "/stats":
            return await self.models["length"].stats.remote()
        body = await request.json()
        words = await self.pre.normalise.remote(body["text"])
        names = sorted(self.models)
        scores = await asyncio.gather(*[self.models[n].score.remote(words) for n in names])
        return {"words": words, "scores": dict(zip(names, scores))}


app = Ingress.bind(Preprocessor.bind(), {"length": LengthModel.bind(0.5), "count": CountModel.bind()})
