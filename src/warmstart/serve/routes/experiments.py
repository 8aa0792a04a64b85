"""A/B tests: started and stopped with an admin key, read with any key."""

from fastapi import Depends

from warmstart.serve import schemas as s
from warmstart.serve.deps import (
    ADMIN,
    CONFLICT,
    NOT_FOUND,
    REFUSED,
    ServiceDep,
    keyed_router,
    require_admin,
)
from warmstart.serve.store import ExperimentRecord

router = keyed_router()


@router.post(
    "/v1/experiments",
    status_code=201,
    dependencies=[Depends(require_admin)],
    response_model=s.ExperimentOut,
    responses={**ADMIN, **CONFLICT, **REFUSED},
)
def create_experiment(body: s.ExperimentIn, service: ServiceDep) -> s.ExperimentOut:
    arms = [a.model_dump(exclude_none=True) for a in body.arms]
    service.start_experiment(ExperimentRecord(body.experiment_id, arms))
    return s.ExperimentOut(**service.experiment_report(body.experiment_id))


@router.get("/v1/experiments/{experiment_id}", response_model=s.ExperimentOut, responses=NOT_FOUND)
def experiment(experiment_id: s.PathId, service: ServiceDep) -> s.ExperimentOut:
    return s.ExperimentOut(**service.experiment_report(experiment_id))


@router.post(
    "/v1/experiments/{experiment_id}/stop",
    dependencies=[Depends(require_admin)],
    response_model=s.ExperimentOut,
    responses={**ADMIN, **NOT_FOUND},
)
def stop_experiment(experiment_id: s.PathId, service: ServiceDep) -> s.ExperimentOut:
    service.stop_experiment(experiment_id)
    return s.ExperimentOut(**service.experiment_report(experiment_id))
