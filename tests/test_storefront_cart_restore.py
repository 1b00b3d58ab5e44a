"""A cart-recovery link lands on the store's cart page with `wooflow_cart`/`wooflow_items`:
the storefront snippet refills the cart through WooCommerce's Store API (the simulator's,
over a real socket), keeps the token in a cookie and reloads without the parameters. The
snippet runs in Node with just the browser objects it touches (Node.js comes from `./run
setup`; without it the test is skipped loudly — and fails in CI)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import tool_missing
from wooflow.producers.storefront import SNIPPET
from wooflow.scheduler.recovery import items_param
from wooflow.simulator.server import SimulatorServer

pytestmark = pytest.mark.unit

NODE = shutil.which("node") or shutil.which("nodejs")

# A page at `landing` with the snippet in it: location, storage, cookie and fetch are real
# enough for it (fetch is Node's own, against the simulator).
HARNESS = r"""
const landing = process.argv[1], snippet = require("fs").readFileSync(0, "utf8");
const storage = () => { const m = new Map(); return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)) }; };
const out = { replaced: null, cookie: "" };
let inflight = 0, reported = false;
// Done when the page reloads or nothing is in flight any more (every request settled).
function check() { if (!reported && (out.replaced || inflight === 0)) { reported = true; console.log(JSON.stringify(out)); } }
const location = new URL(landing);
location.replace = (url) => { out.replaced = url; };
const window = { location, localStorage: storage(), sessionStorage: storage(), navigator: {},
                 fetch: (u, o) => { inflight++; return fetch(u, o).finally(() => { inflight--; setTimeout(check, 0); }); } };
const document = { readyState: "complete", body: { className: "woocommerce-cart" }, addEventListener() {},
                   set cookie(v) { out.cookie = v; }, get cookie() { return out.cookie; } };
new Function("window", "document", snippet)(window, document);
setTimeout(check, 0);
"""


def run_snippet(landing: str, endpoint: str) -> dict[str, str]:
    if NODE is None:
        tool_missing("Node.js is not installed: run `./run setup` as root (Debian package `nodejs`)")
    assert NODE is not None
    js = SNIPPET.replace("__ENDPOINT__", orjson.dumps(endpoint).decode()).replace("__KEY__", '"pk_test"')
    done = subprocess.run([NODE, "-e", HARNESS, landing], input=js, capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_recovery_link_refills_the_cart_through_the_store_api() -> None:
    with SimulatorServer(seed=21) as sim:
        mug = sim.store.create_product("Mug", "19.90")
        spoon = sim.store.create_product("Spoon", "5.00")
        items = items_param([{"product_id": mug.id, "quantity": 2}, {"product_id": spoon.id, "quantity": 1}])
        landing = f"{sim.url}/cart/?wooflow_cart=tok123&wooflow_items={items}&utm_source=email"
        out = run_snippet(landing, f"{sim.url}/storefront-sink")

        assert out["replaced"] == "/cart/?utm_source=email", out
        assert out["cookie"].startswith("wooflow_cart=tok123;") and "path=/" in out["cookie"]
        [cart] = httpx.get(f"{sim.url}/__sim__/store_carts").json()
        assert {i["id"]: i["quantity"] for i in cart["items"]} == {mug.id: 2, spoon.id: 1}
        assert cart["totals"]["total_price"] == "4480"  # 2 × 19.90 + 5.00, in minor units

        # a page without a recovery link leaves the cart alone and does not reload
        out = run_snippet(f"{sim.url}/cart/", f"{sim.url}/storefront-sink")
        assert out["replaced"] is None
        assert len(httpx.get(f"{sim.url}/__sim__/store_carts").json()) == 1


def test_simulated_store_api_guards_cart_writes_like_woocommerce() -> None:
    with SimulatorServer(seed=22) as sim:
        mug = sim.store.create_product("Mug", "19.90")
        with httpx.Client(base_url=sim.url) as client:
            first = client.get("/wp-json/wc/store/v1/cart")
            assert first.status_code == 200 and first.json()["items_count"] == 0
            nonce, token = first.headers["Nonce"], first.headers["Cart-Token"]
            add = "/wp-json/wc/store/v1/cart/add-item"
            body = {"id": mug.id, "quantity": 1}
            # the session cookie alone is not enough: a write needs the session's nonce
            r = client.post(add, json=body)
            assert r.status_code == 401 and r.json()["code"] == "woocommerce_rest_missing_nonce"
            r = client.post(add, json=body, headers={"Nonce": "0000"})
            assert r.status_code == 403 and r.json()["code"] == "woocommerce_rest_invalid_nonce"
            assert client.post(add, json=body, headers={"Nonce": nonce}).status_code == 201
        # a Cart-Token names the cart without cookies or nonce (headless clients)
        r = httpx.post(f"{sim.url}{add}", json=body, headers={"Cart-Token": token})
        assert r.status_code == 201 and r.json()["items"][0]["quantity"] == 2
        r = httpx.post(f"{sim.url}{add}", json={"id": 999999}, headers={"Cart-Token": token})
        assert r.status_code == 400 and r.json()["code"] == "woocommerce_rest_cart_invalid_product"
