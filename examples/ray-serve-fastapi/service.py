"""A Ray Serve deployment as production users write them: a FastAPI ingress over pandas.

Nothing here knows about Tessera: it is plain Ray Serve 2.x code and runs on a Ray cluster with
`serve run service:app` as well as on Tessera.
"""

from typing import Dict, List, Optional

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel
from ray import serve

api = FastAPI()


class Rows(BaseModel):
    rows: List[Dict]
    columns: Optional[List[str]] = None


class SortRequest(Rows):
    ascending: bool = True


def frame_of(body: Rows) -> pd.DataFrame:
    frame = pd.DataFrame(body.rows)
    missing = [c for c in (body.columns or []) if c not in frame.columns]
    if missing:
        raise HTTPException(status_code=422, detail="unknown columns: %s" % ", ".join(missing))
    return frame


def limit_param(limit: Optional[int] = Query(None, ge=1)) -> Optional[int]:
    return limit


@serve.deployment(
    name="CustomService",
    num_replicas=2,
    ray_actor_options={"num_cpus": 0.5, "memory": 256 * 1024 * 1024},
    max_ongoing_requests=16,
    user_config={"greeting": "hello"},
    health_check_period_s=5,
)
@serve.ingress(api)
class CustomService:
    def __init__(self):
        self.greeting = "unset"
        self.calls = 0

    def reconfigure(self, config: Dict):
        self.greeting = config.get("greeting", "hello")

    @api.post("/deduplicate")
    def deduplicate(self, body: Rows, limit: Optional[int] = Depends(limit_param)):
        self.calls += 1
        frame = frame_of(body)
        out = frame.drop_duplicates(subset=body.columns or None)
        if limit is not None:
            out = out.head(limit)
        return {"rows": out.to_dict(orient="records"), "removed": len(frame) - len(out)}

    @api.post("/sort")
    async def sort(self, body: SortRequest):
        self.calls += 1
        frame = frame_of(body)
        out = frame.sort_values(by=body.columns or list(frame.columns), ascending=body.ascending, kind="stable")
        return {"rows": out.to_dict(orient="records")}

    @api.get("/columns/{name}")
    def column(self, name: str, q: str = "x"):
        return {"name": name, "q": q, "greeting": self.greeting, "calls": self.calls,
                "replica": serve.get_replica_context().deployment}


app = CustomService.bind()
