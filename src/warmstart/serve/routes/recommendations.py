"""Recommendations: for a user (by id), for a profile sent in the request, and similar items.

The handlers are async and send only the engine's work to a read thread (`deps.Reads`): a
sync route would also validate its response in a second thread hop.
"""

from dataclasses import replace
from typing import Annotated

from fastapi import Query

from warmstart.data.templates import short_label
from warmstart.models.base import Explanation
from warmstart.serve import schemas as s
from warmstart.serve.deps import NOT_FOUND, ReadsDep, ServiceDep, keyed_router
from warmstart.serve.engine import Ranked

router = keyed_router()

K = Annotated[int, Query(ge=1, le=s.MAX_K, description="how many items")]


@router.get("/v1/users/{user_id}/recommendations", response_model=s.RecommendationsOut)
async def recommend_user(
    user_id: s.PathId,
    service: ServiceDep,
    reads: ReadsDep,
    k: K = 10,
    exclude_seen: bool = True,
    explain: bool = True,
) -> s.RecommendationsOut:
    engine, blend, tag = service.route(user_id)
    ranked = await reads.run(
        engine.recommend_user,
        user_id,
        k=k,
        exclude_seen=exclude_seen,
        explain=explain,
        blend=blend,
    )
    if tag is not None:
        service.experiments.record(tag.experiment_id, tag.arm, user_id, len(ranked.item_ids))
    out = recommendations_out(user_id, ranked)
    out.experiment = tag
    return out


@router.post("/v1/recommendations", response_model=s.RecommendationsOut, responses=NOT_FOUND)
async def recommend_profile(
    body: s.ProfileIn, service: ServiceDep, reads: ReadsDep
) -> s.RecommendationsOut:
    ranked = await reads.run(
        service.engine.recommend_profile,
        body.text,
        body.attributes,
        body.item_ids,
        k=body.k,
        exclude_seen=body.exclude_seen,
        explain=body.explain,
    )
    return recommendations_out(None, ranked)


@router.get("/v1/items/{item_id}/similar", response_model=s.SimilarOut, responses=NOT_FOUND)
async def similar(
    item_id: s.PathId, service: ServiceDep, reads: ReadsDep, k: K = 10
) -> s.SimilarOut:
    ranked = await reads.run(service.engine.similar_items, item_id, k=k)
    return s.SimilarOut(
        item_id=item_id,
        items=[
            s.SimilarItem(item_id=i, title=t, score=sc)
            for i, t, sc in zip(ranked.item_ids, ranked.titles, ranked.scores, strict=True)
        ],
    )


def recommendations_out(user_id: str | None, ranked: Ranked) -> s.RecommendationsOut:
    """The response body for a ranked list, explanations included when it has them."""
    explanations: list[Explanation | None] = (
        list(ranked.explanations) if ranked.explanations else [None] * len(ranked.item_ids)
    )
    return s.RecommendationsOut(
        user_id=user_id,
        route=ranked.route,
        recommendations=[
            s.Recommendation(
                item_id=i,
                title=t,
                score=score,
                explanation=_explanation(e) if e is not None else None,
            )
            for i, t, score, e in zip(
                ranked.item_ids, ranked.titles, ranked.scores, explanations, strict=True
            )
        ],
    )


def _explanation(e: Explanation) -> s.ExplanationOut:
    # Titles are short already; these also bound those of models saved before they were.
    e = replace(e, neighbours=tuple((i, short_label(t), sim) for i, t, sim in e.neighbours))
    return s.ExplanationOut(
        summary=e.summary(),
        neighbours=[s.Neighbour(item_id=i, title=t, similarity=sim) for i, t, sim in e.neighbours],
        text_similarity=e.text_similarity,
        notes=list(e.notes),
    )
