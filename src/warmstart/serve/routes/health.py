"""Liveness, readiness and metrics: what a load balancer and Prometheus ask.

`/healthz` and `/readyz` need no key, so a probe holds no secret; `/metrics` does.
"""

import os

from fastapi import APIRouter, Depends, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from warmstart.serve import schemas as s
from warmstart.serve.deps import KEYED, ServiceDep, require_key

router = APIRouter()


@router.get("/healthz", response_model=s.Health)
async def healthz(service: ServiceDep) -> s.Health:
    # liveness: answered on the event loop, loading or not
    return s.Health(status="ok", ready=service.ready)


@router.get("/readyz", response_model=s.Ready, responses={503: {"model": s.Ready}})
async def readyz(service: ServiceDep, response: Response) -> s.Ready:
    """200 once the model, its indexes and the text encoder are loaded; 503 before."""
    if service.ready:
        engine = service.engine
        cache = engine.text_cache
        return s.Ready(
            status="ready",
            model=engine.model.name,
            items=engine.n_items,
            worker=os.getpid(),
            query_encoder=(cache.queries or cache.encoder).name,
        )
    # A state, not an error: the body says which, so it is this route's to answer.
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    failed = service.load_failed
    return s.Ready(
        status="failed" if failed else "loading",
        detail="the model could not be loaded: see the server log" if failed else None,
    )


@router.get(
    "/metrics",
    dependencies=[Depends(require_key)],
    response_class=Response,
    responses={
        **KEYED,
        200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
    },
)
def prometheus(service: ServiceDep) -> Response:
    return Response(service.metrics.exposition(service.engine), media_type=CONTENT_TYPE_LATEST)
