"""GET /v1/catalog/terms: the store's product categories and tags by name, for the console's
condition builder (conditions compare term ids; people pick names).

Read from `product_catalog` (what the rule consumer recorded from the store's product
events and REST reads, wooflow/consumer/catalog.py), one statement over the store's rows:
each term with the name its most recently modified product gives it, and how many products
carry it. A term recorded before names were kept has none yet: it comes with an empty name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from wooflow.api.auth import CurrentStore

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
MAX_TERMS = 2000

_TERMS = {
    taxonomy: text(f"""
SELECT id, name, products FROM (
    SELECT t.id, coalesce((array_agg(t.name ORDER BY c.modified_ms DESC) FILTER (WHERE t.name <> ''))[1], '') AS name,
           count(*) AS products
    FROM product_catalog c, unnest(c.{ids}, c.{names}) AS t(id, name)
    WHERE c.store_id = :store AND t.id IS NOT NULL
    GROUP BY t.id) AS terms
ORDER BY name = '', lower(name), id
LIMIT :limit
""") for taxonomy, ids, names in (("category", "category_ids", "category_names"), ("tag", "tag_ids", "tag_names"))}


class Term(BaseModel):
    id: int = Field(description="The term id conditions compare (product_cat or product_tag)")
    name: str = Field(description="Its name ('' if the catalog has not recorded one yet)")
    products: int = Field(description="Products of the catalog that carry it")


class Terms(BaseModel):
    taxonomy: Literal["category", "tag"]
    terms: list[Term] = Field(description="By name")


@router.get("/terms", response_model=Terms, summary="The store's product categories or tags, by name")
def terms(request: Request, who: CurrentStore,
          taxonomy: Annotated[Literal["category", "tag"], Query(description="category or tag")] = "category") -> Terms:
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        rows = conn.execute(_TERMS[taxonomy], {"store": who.store_id, "limit": MAX_TERMS}).all()
    return Terms(taxonomy=taxonomy, terms=[Term(id=int(r.id), name=str(r.name), products=int(r.products))
                                           for r in rows])
