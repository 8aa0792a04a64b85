"""Interactions: what users viewed, clicked, bought or rated, folded in as they arrive."""

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
from warmstart.serve.store import EventRecord

router = keyed_router()


@router.post("/v1/events", response_model=s.EventsOut, responses=NOT_FOUND)
def add_events(
    body: s.EventsIn, service: ServiceDep, max_batch: MaxBatch, response: Response
) -> s.EventsOut:
    check_batch(len(body.events), max_batch, "events")
    records = [
        EventRecord(
            user_id=e.user_id,
            item_id=e.item_id,
            type=e.type,
            value=e.value,
            timestamp=e.timestamp,
            event_id=e.event_id,
        )
        for e in body.events
    ]
    accepted = service.add_events(records)
    acknowledge_write(service, response)
    return s.EventsOut(accepted=accepted, duplicates=len(records) - accepted)
