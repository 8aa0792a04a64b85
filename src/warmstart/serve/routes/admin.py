"""Operations on the running service: swapping in a newly fitted model."""

import time
from pathlib import Path

from warmstart.serve import schemas as s
from warmstart.serve.deps import REFUSED, ServiceDep, admin_router

router = admin_router()


@router.post("/v1/admin/reload", response_model=s.ReloadOut, responses=REFUSED)
def reload(service: ServiceDep, body: s.ReloadIn | None = None) -> s.ReloadOut:
    start = time.perf_counter()
    target = Path(body.model) if body is not None and body.model else None
    engine = service.reload(target)
    return s.ReloadOut(
        model=str(service.model_dir),
        items=engine.n_items,
        seconds=round(time.perf_counter() - start, 3),
    )
