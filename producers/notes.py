"""Order notes: the order a note belongs to, and the note as REST shows it.

WooCommerce has no order-note topic. A store delivers notes through an action webhook:
- `action.woocommerce_order_note_added`, whose payload is `{"action", "arg": <note id>}`:
  WooCommerce passes the hook's first argument only, and the order is its second. The
  bridge looks for the note among the store's most recently modified orders
  (`WOOFLOW_NOTE_LOOKUP_ORDERS`, one `GET /orders/{id}/notes` each, newest first): a note
  is nearly always added to an order that just changed (a status change, a payment, a
  shipping plugin's tracking note). A store that adds the order to the payload
  (`{"id": <note>, "order_id": <order>}` through the `woocommerce_webhook_payload` filter)
  is read directly.
- `action.woocommerce_new_customer_note` (notes to the customer only), whose payload names
  the order and the text: the note is the newest customer note of the order with that text.
Both give the same event for the same note (its event id comes from the note's id).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from wooflow.jsontypes import JSONObject, JSONValue
from wooflow.producers.normalise import ActionPlan
from wooflow.producers.woo_rest import AsyncWooRest
from wooflow.stores import Store

log = logging.getLogger(__name__)
CONCURRENT = 4  # notes lists asked at once while looking for a note's order


@dataclass(frozen=True)
class FoundNote:
    order_id: int
    note: JSONObject
    order: JSONObject | None


def _objects(v: JSONValue) -> list[JSONObject]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _id(v: JSONValue) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


async def find_note(rest: AsyncWooRest, store: Store, plan: ActionPlan, lookup_orders: int) -> FoundNote | None:
    """The note a note plan names, with its order; None when it cannot be found."""
    order_id = plan.resource_id
    note: JSONObject | None = None
    if order_id and plan.note_id:
        got = await rest.get(store, f"/orders/{order_id}/notes/{plan.note_id}")
        note = got if isinstance(got, dict) else None
    elif order_id and plan.note_text is not None:
        notes = _objects(await rest.get(store, f"/orders/{order_id}/notes", {"type": "customer"}))
        text = plan.note_text.strip()
        note = next((n for n in notes if str(n.get("note") or "").strip() == text), None)  # newest first
    elif plan.note_id:
        found = await _search(rest, store, plan.note_id, lookup_orders)
        if found is not None:
            order_id, note = found
    if note is None or not order_id:
        return None
    return FoundNote(order_id, note, await rest.get_item(store, "order", order_id))


async def _search(rest: AsyncWooRest, store: Store, note_id: int, lookup_orders: int) -> tuple[int, JSONObject] | None:
    recent = _objects(await rest.get(store, "/orders", {"orderby": "modified", "order": "desc",
                                                         "per_page": max(1, min(lookup_orders, 100))}))
    ids = [_id(o.get("id")) for o in recent if _id(o.get("id"))]
    for start in range(0, len(ids), CONCURRENT):
        chunk = ids[start:start + CONCURRENT]
        lists = await asyncio.gather(*(rest.get(store, f"/orders/{oid}/notes") for oid in chunk))
        for oid, notes in zip(chunk, lists, strict=True):
            note = next((n for n in _objects(notes) if _id(n.get("id")) == note_id), None)
            if note is not None:
                return oid, note
    log.info("store %s: order note %d is on none of the %d most recently modified orders", store.id, note_id,
             len(ids))
    return None
