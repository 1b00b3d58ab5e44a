"""`/wc/v3/products`, `/wc/v3/products/{id}/variations` and `/wc/v3/products/categories`.

As in WooCommerce, the product list holds products only (post type `product`), never
their variations, while `/products/{id}` answers a variation id with the variation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..representations import category_json
from .api import API, COLLECTION, ITEM, Api, method_action, path_id, writable
from .listing import paginate
from .params import Params


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
        product = store.create_product(
            str(params.get("name") or ""), params.get("regular_price") or "0",
            sale_price=params.get("sale_price"), sku=str(params.get("sku") or ""),
            categories=params.get("categories"), status=str(params.get("status") or "publish"),
            type=str(params.get("type") or "simple"), description=str(params.get("description") or ""),
            short_description=str(params.get("short_description") or ""),
            tags=list(params.get("tags") or []),
            stock_status=str(params.get("stock_status") or "instock"), meta_data=params.get("meta_data"),
        )
        return api.created("product", product.id, "products")

    def listing(request: Request, params: Params) -> Response:
        status = params.get("status") or "any"
        with store.lock:
            items = [p for p in store.products.values() if p.type != "variation"]
            items = [p for p in items if p.status != "trash"] if status == "any" else \
                [p for p in items if p.status == status]
            if params.get("sku"):
                wanted = set(params.str_list("sku"))
                items = [p for p in items if p.sku in wanted]
            category = params.integer("category")
            if category:
                items = [p for p in items if category in p.category_ids]
            if params.get("stock_status"):
                items = [p for p in items if p.stock_status == params.get("stock_status")]
            return api.listing(
                request, params, "product", "products", items, dated=True, fields=lambda p: [p.name, p.sku],
                orderby={"date": lambda p: p.created_at, "id": lambda p: p.id, "modified": lambda p: p.modified_at,
                         "title": lambda p: p.name.lower(), "slug": lambda p: p.slug, "price": lambda p: p.price},
                default="date")

    products = api.collection("product", create, listing)

    product = api.item("product", lambda: store.products,
                       lambda i, params: store.update_product(i, **writable(params)), store.delete_product)

    @api.endpoint(method_action)
    async def variations(request: Request, params: Params) -> Response:
        parent = path_id(request)
        if request.method == "POST":
            attributes = {str(a.get("name") or ""): str(a.get("option") or "")
                          for a in params.get("attributes") or [] if isinstance(a, dict)}
            v = store.create_variation(parent, params.get("regular_price") or "0", sku=str(params.get("sku") or ""),
                                       attributes=attributes)
            return api.created("product", v.id, f"products/{parent}/variations")
        with store.lock:
            store.rest_item("product", parent)  # the parent's 404
            items = [p for p in store.products.values() if p.parent_id == parent and p.type == "variation"]
            return paginate(store, request, params, f"/wc/v3/products/{parent}/variations", items,
                            lambda p: store.rest_item("product", p.id))

    @api.endpoint("list")
    async def categories(request: Request, params: Params) -> Response:
        with store.lock:
            counts: dict[int, int] = {}
            for p in store.products.values():
                for cid in p.category_ids:
                    counts[cid] = counts.get(cid, 0) + 1
            items = sorted(store.categories.values(), key=lambda c: c.name.lower())
            return paginate(store, request, params, "/wc/v3/products/categories", items,
                            lambda c: category_json(c, store.site, counts.get(c.id, 0)))

    return [
        Route(f"{API}/products/categories", categories, methods=["GET"]),
        Route(f"{API}/products", products, methods=COLLECTION),
        Route(f"{API}/products/{{id:int}}", product, methods=ITEM),
        Route(f"{API}/products/{{id:int}}/variations", variations, methods=["GET", "POST"]),
    ]
