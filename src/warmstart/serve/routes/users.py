"""Users' own text and attributes, and what the service knows of each."""

from fastapi import Response

from warmstart.serve import schemas as s
from warmstart.serve.deps import (
    NOT_FOUND,
    MaxBatch,
    ServiceDep,
    acknowledge_write,
    check_batch,
    keyed_router,
)
from warmstart.serve.store import UserRecord

router = keyed_router()


@router.post("/v1/users", response_model=s.UsersOut)
def upsert_users(
    body: s.UsersIn, service: ServiceDep, max_batch: MaxBatch, response: Response
) -> s.UsersOut:
    check_batch(len(body.users), max_batch, "users")
    records = [UserRecord(u.user_id, u.text, dict(u.attributes)) for u in body.users]
    service.upsert_users(records)
    acknowledge_write(service, response)
    return s.UsersOut(upserted=len(records))


@router.get("/v1/users/{user_id}", response_model=s.UserOut, responses=NOT_FOUND)
def get_user(user_id: s.PathId, service: ServiceDep) -> s.UserOut:
    text, attributes, known, n = service.engine.user_info(user_id)
    return s.UserOut(
        user_id=user_id,
        text=text,
        attributes=dict(attributes),
        known_to_model=known,
        interactions=n,
    )
