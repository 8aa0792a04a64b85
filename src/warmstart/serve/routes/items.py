"""The catalogue: items added, edited and deleted while the service runs."""

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
from warmstart.serve.store import ItemRecord

router = keyed_router()


@router.post("/v1/items", response_model=s.ItemsOut)
def upsert_items(
    body: s.ItemsIn, service: ServiceDep, max_batch: MaxBatch, response: Response
) -> s.ItemsOut:
    check_batch(len(body.items), max_batch, "items")
    records = [ItemRecord(i.item_id, i.text, dict(i.attributes)) for i in body.items]
    created, updated = service.upsert_items(records)
    acknowledge_write(service, response)
    return s.ItemsOut(upserted=len(records), created=created, updated=updated)


@router.get("/v1/items/{item_id}", response_model=s.ItemOut, responses=NOT_FOUND)
def get_item(item_id: s.PathId, service: ServiceDep) -> s.ItemOut:
    title, text = service.engine.item_info(item_id)
    return s.ItemOut(item_id=item_id, title=title, text=text)


@router.delete("/v1/items/{item_id}", responses=NOT_FOUND)
def delete_item(item_id: s.PathId, service: ServiceDep, response: Response) -> dict[str, str]:
    service.delete_item(item_id)
    acknowledge_write(service, response)
    return {"deleted": item_id}
