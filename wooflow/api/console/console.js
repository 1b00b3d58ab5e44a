// The wooflow console: a single page over the admin API (/v1). Served as written — no build
// step; one vendored library, uPlot (console/vendor/), loaded by the analytics page only.
// Every value from the API reaches the page as text (h() appends strings as text nodes, never
// as markup); the token lives in this tab's sessionStorage and travels only in the
// Authorization header.
"use strict";

(() => {
  const KEY = "wooflow.console";
  const PAGE = 50;
  const $main = () => document.getElementById("main");
  let session = readSession();
  let me = session ? session.me || null : null;  // who the token is, kept from sign-in (a 401 signs out)
  let schemaCache = null;
  let renderSeq = 0;
  let signInNote = "";
  const logCursors = { filter: "", stack: [] };

  // ---- helpers -------------------------------------------------------------------------

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = String(v);
      else if (k === "value") value = v;
      else if (["checked", "selected", "disabled", "multiple", "hidden", "required"].includes(k)) el[k] = true;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    el.append(...nodes(kids));
    if (value !== undefined) el.value = value;
    return el;
  }

  // Children as nodes: lists flattened, null/undefined/false left out, anything else as text.
  function nodes(kids) {
    return kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
      .map((k) => (k instanceof Node ? k : document.createTextNode(String(k))));
  }

  function setKids(el, ...kids) {
    el.replaceChildren(...nodes(kids));
  }

  // The same for SVG elements (the holdout lift's interval chart).
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = String(v); else el.setAttribute(k, String(v));
    }
    el.append(...nodes(kids));
    return el;
  }

  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;
  const total = (obj) => Object.values(obj || {}).reduce((a, b) => a + Number(b), 0);

  function money(amount, currency) {
    const n = Number(amount);
    try { return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(n); } catch (e) { return `${n.toFixed(2)} ${currency}`; }
  }

  function moneyList(byCurrency) {
    const parts = Object.entries(byCurrency || {}).filter(([, v]) => Number(v) !== 0).map(([c, v]) => money(v, c));
    return parts.length ? parts.join(" + ") : "—";
  }

  // The chart library, fetched once when a page first draws a chart and run as an inline
  // script (the page's Content-Security-Policy allows exactly this file by its hash).
  let chartLib = null;
  function charts() {
    if (!chartLib) {
      chartLib = fetch("/console/vendor/uPlot.iife.min.js").then((r) => {
        if (!r.ok) throw new Error(`the chart library could not be loaded (HTTP ${r.status})`);
        return r.text();
      }).then((code) => {
        const el = document.createElement("script");
        el.textContent = code;
        document.head.append(el);
        if (typeof window.uPlot !== "function") throw new Error("the chart library did not start");
        return window.uPlot;
      });
      chartLib.catch(() => { chartLib = null; });
    }
    return chartLib;
  }

  // The store's product categories or tags (GET /v1/catalog/terms), once per sign-in.
  const termCache = {};
  function catalogTerms(taxonomy) {
    if (!termCache[taxonomy]) {
      termCache[taxonomy] = api("GET", `/v1/catalog/terms?taxonomy=${taxonomy}`).then((res) => {
        if (!res.ok) throw new ApiError(errorText(res));
        return res.data.terms;
      });
      termCache[taxonomy].catch(() => { delete termCache[taxonomy]; });
    }
    return termCache[taxonomy];
  }

  function field(label, input, help) {
    const id = input.id || (input.id = nextId("f"));
    return h("div", { class: "field" }, h("label", { for: id, text: label }), input,
      help ? h("small", { class: "help", text: help }) : null);
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function pretty(value) {
    return h("pre", { class: "json", text: JSON.stringify(value, null, 2) });
  }

  function query() {
    const q = location.hash.split("?")[1] || "";
    return Object.fromEntries(new URLSearchParams(q));
  }

  function hashWith(base, params) {
    const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
    const s = q.toString();
    return s ? `${base}?${s}` : base;
  }

  function note(kind, text) {
    return h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status", text });
  }

  function errorText(res) {
    const d = res.data || {};
    if (typeof d.message === "string") return d.message;
    if (typeof d.detail === "string") return d.detail;
    return `the API answered HTTP ${res.status}`;
  }

  function readSession() {
    try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { return null; }
  }

  function saveSession(s) {
    session = s;
    if (s) sessionStorage.setItem(KEY, JSON.stringify(s)); else sessionStorage.removeItem(KEY);
  }

  class ApiError extends Error {}

  async function api(method, path, body) {
    if (!session) throw new ApiError("signed out");
    const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
    if (session.store) headers["X-Wooflow-Store"] = session.store;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    if (r.status !== 204) {
      try { data = await r.json(); } catch (e) { data = null; }
    }
    if (r.status === 401 && me) {  // signed in, and the token stopped working (revoked)
      signOut("The API refused the token: sign in again.");
      throw new ApiError("unauthorised");
    }
    return { ok: r.ok, status: r.status, data };
  }

  async function schema() {
    if (!schemaCache) {
      const res = await api("GET", "/v1/schema");
      if (!res.ok) throw new ApiError(errorText(res));
      schemaCache = res.data;
    }
    return schemaCache;
  }

  // ---- frame: sign-in, navigation, routing -----------------------------------------------

  function signOut(message) {
    saveSession(null);
    me = null;
    schemaCache = null;
    for (const k of Object.keys(termCache)) delete termCache[k];
    logCursors.stack = [];
    signInNote = message || "";  // shown until the next sign-in, however often the form is drawn
    frame();
    location.hash = "#/signin";
    route();
  }

  function frame() {
    const nav = document.getElementById("nav");
    nav.hidden = !me;
    for (const a of nav.querySelectorAll("[data-operator]")) a.hidden = !(me && me.operator);
    document.getElementById("signout").hidden = !me;
    document.getElementById("who").textContent = me
      ? `${me.store_name} (${me.store_id})${me.operator ? " · operator" : ""}` : "";
  }

  function signInPage() {
    const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true,
      "data-path": "token" });
    const store = h("input", { type: "text", name: "store", autocomplete: "off", "data-path": "store",
      value: "" });
    const form = h("form", { class: "signin", novalidate: true },
      h("h1", { text: "Sign in" }),
      signInNote ? note("error", signInNote) : null,
      field("API token", token, "A store token (wooflow stores token STORE) or an operator token"),
      field("Store id", store, "Operator tokens only: the store to work on"),
      h("button", { type: "submit", text: "Sign in" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      saveSession({ token: token.value.trim(), store: store.value.trim() || null });
      let res;
      try { res = await api("GET", "/v1/me"); } catch (e) { showErrors(form, [{ field: "token", message: "the token was refused" }]); return; }
      if (!res.ok) {
        saveSession(null);
        const where = res.status === 400 || res.status === 404 ? "store" : "token";
        showErrors(form, [{ field: where, message: errorText(res) }]);
        return;
      }
      me = res.data;
      signInNote = "";
      saveSession({ ...session, me });
      frame();
      location.hash = "#/rules";
    });
    return form;
  }

  const ROUTES = [
    ["rule", /^#\/rules\/new$/, () => editorPage(null)],
    ["rule", /^#\/rules\/(\d+)$/, (m) => editorPage(Number(m[1]))],
    ["rules", /^#\/rules$/, () => rulesPage()],
    ["templates", /^#\/templates$/, () => templatesPage()],
    ["dry-run", /^#\/dry-run$/, () => dryRunPage()],
    ["log", /^#\/logs\/(.+)$/, (m) => logDetailPage(decodeURIComponent(m[1]))],
    ["logs", /^#\/logs$/, () => logsPage()],
    ["analytics", /^#\/analytics$/, () => analyticsPage()],
    ["rule-analytics", /^#\/analytics\/(\d+)$/, (m) => ruleAnalyticsPage(Number(m[1]))],
    ["letter", /^#\/dlq\/(\d+)\/(\d+)$/, (m) => letterPage(Number(m[1]), Number(m[2]))],
    ["ops", /^#\/(ops|dlq)$/, () => opsPage()],
  ];

  async function route() {
    const seq = ++renderSeq;
    const main = $main();
    main.removeAttribute("data-ready");
    const path = (location.hash || "#/rules").split("?")[0];
    frame();
    if (!session || !me) {
      if (session && !me) {
        try {
          const res = await api("GET", "/v1/me");
          if (res.ok) { me = res.data; saveSession({ ...session, me }); } else { saveSession(null); }
        } catch (e) { /* signed out */ }
        if (seq !== renderSeq) return;
      }
      if (!me) {
        show(seq, "signin", "Sign in", signInPage());
        return;
      }
    }
    if (path === "#/signin" || path === "#/" || path === "#") { location.hash = "#/rules"; return; }
    const found = ROUTES.find(([, re]) => re.test(path));
    if (!found) { show(seq, "missing", "Not found", h("h1", { text: "No such page" })); return; }
    const [name, re, render] = found;
    const section = { dlq: "ops" }[path.split("/")[1]] || path.split("/")[1];
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.nav === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    let content;
    try {
      content = await render(path.match(re));
    } catch (e) {
      if (e instanceof ApiError && !session) return;
      content = note("error", `Something went wrong: ${e.message}`);
    }
    if (seq !== renderSeq) return;
    show(seq, name, content.dataset && content.dataset.title ? content.dataset.title : name, content);
  }

  function show(seq, name, title, content) {
    if (seq !== renderSeq) return;
    const main = $main();
    setKids(main, content);
    document.title = `${title} · wooflow console`;
    main.dataset.ready = name;
    performance.mark(`wooflow:ready:${name}`);  // bench/console reads the first page's time from here
  }

  // ---- field errors (the API's 422 paths) ----------------------------------------------------

  function clearErrors(form) {
    for (const e of form.querySelectorAll(".field-error, .error-summary")) e.remove();
    for (const e of form.querySelectorAll("[aria-invalid]")) {
      e.removeAttribute("aria-invalid");
      e.removeAttribute("aria-describedby");
    }
  }

  function inputFor(form, path) {
    // The deepest input named by the path or by one of its prefixes ("actions[0].params.x.y"
    // → "actions[0].params.x" → ...), so an error inside a JSON-valued input (a workflow
    // step edited as JSON) lands on it; with the path inside it.
    let p = path;
    while (p) {
      const el = form.querySelector(`[data-path="${CSS.escape(p)}"]`);
      if (el) return { input: el, inner: path.slice(p.length).replace(/^\./, "") };
      const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
      p = cut > 0 ? p.slice(0, cut) : "";
    }
    return null;
  }

  function showErrors(form, errors, heading) {
    clearErrors(form);
    const unplaced = [];
    let first = null;
    for (const e of errors) {
      const found = inputFor(form, e.field || "");
      if (!found) { unplaced.push(e); continue; }
      const { input, inner } = found;
      const id = nextId("err");
      const msg = h("p", { class: "field-error", id, "data-error-for": e.field, text: inner ? `${inner}: ${e.message}` : e.message });
      const anchor = input.closest(".field, .cond, .inline") || input;
      anchor.after(msg);
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", id);
      first = first || input;
    }
    if (heading || unplaced.length) {
      const summary = h("div", { class: "error-summary", role: "alert" },
        heading ? h("p", { text: heading }) : null,
        unplaced.length ? h("ul", {}, unplaced.map((e) => h("li", { text: e.field ? `${e.field}: ${e.message}` : e.message }))) : null);
      form.prepend(summary);
    }
    if (first) first.focus();
  }

  // ---- rules list --------------------------------------------------------------------------

  function specOf(rule) {
    const keep = ["name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled",
      "group_label", "frequency", "exit_conditions", "holdout_percent", "goals", "when_disabled"];
    return Object.fromEntries(keep.filter((k) => k in rule).map((k) => [k, rule[k]]));
  }

  async function rulesPage() {
    const q = query();
    const offset = Math.max(0, Number(q.offset || 0));
    const params = new URLSearchParams({ limit: PAGE, offset });
    if (q.trigger) params.set("trigger", q.trigger);
    if (q.enabled) params.set("enabled", q.enabled);
    if (q.group) params.set("group_label", q.group);
    // The first page after sign-in: drawn once the rules are here; the trigger filter's
    // choices (from /v1/schema) are filled in when they arrive.
    const res = await api("GET", `/v1/rules?${params}`);
    const page = h("section", { "data-title": "Rules" }, h("div", { class: "head" }, h("h1", { text: "Rules" }),
      h("a", { class: "button", href: "#/rules/new", text: "New rule" })));
    page.append(rulesFilter(q));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const { rules, total } = res.data;
    page.append(h("p", { class: "muted", text: total ? `Rules ${offset + 1}–${offset + rules.length} of ${total}` : "No rules yet." }));
    if (rules.length) {
      page.append(h("div", { class: "scroll" }, h("table", { class: "rules" },
        h("thead", {}, h("tr", {}, ["On", "Name", "Trigger", "Priority", "Group", "Steps", "Version"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, rules.map(ruleRow)))));
    }
    page.append(pager("#/rules", q, offset, rules.length, total));
    return page;
  }

  function rulesFilter(q) {
    const trig = h("select", { name: "trigger", value: q.trigger || "" }, h("option", { value: "", text: "any trigger" }),
      q.trigger ? h("option", { value: q.trigger, text: q.trigger }) : null);
    schema().then((sch) => {
      setKids(trig, h("option", { value: "", text: "any trigger" }), sch.triggers.map((t) => h("option", { value: t.name, text: t.name })));
      trig.value = q.trigger || "";
    }).catch(() => { /* the filter keeps what it has */ });
    const enabled = h("select", { name: "enabled", value: q.enabled || "" }, h("option", { value: "", text: "enabled or not" }),
      h("option", { value: "true", text: "enabled" }), h("option", { value: "false", text: "disabled" }));
    const group = h("input", { type: "text", name: "group", value: q.group || "" });
    const form = h("form", { class: "filters", role: "search" }, field("Trigger", trig), field("State", enabled),
      field("Group", group), h("button", { type: "submit", text: "Filter" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = hashWith("#/rules", { trigger: trig.value, enabled: enabled.value, group: group.value.trim() });
    });
    return form;
  }

  function ruleRow(rule) {
    const box = h("input", { type: "checkbox", checked: rule.enabled, "aria-label": `Enabled: ${rule.name}` });
    box.addEventListener("change", async () => {
      box.disabled = true;
      const cur = await api("GET", `/v1/rules/${rule.id}`);
      const res = cur.ok ? await api("PUT", `/v1/rules/${rule.id}`, { ...specOf(cur.data), enabled: box.checked }) : cur;
      box.disabled = false;
      if (!res.ok) { box.checked = !box.checked; alert(`Not changed: ${errorText(res)}`); }
    });
    return h("tr", {}, h("td", {}, box), h("td", {}, h("a", { href: `#/rules/${rule.id}`, text: rule.name })),
      h("td", { text: rule.trigger }), h("td", { text: rule.priority }), h("td", { text: rule.group_label }),
      h("td", { text: (rule.actions || []).length }), h("td", { text: rule.version }));
  }

  function pager(base, q, offset, shown, total) {
    const nav = h("nav", { class: "pager", "aria-label": "Pages" });
    if (offset > 0) nav.append(h("a", { class: "button", href: hashWith(base, { ...q, offset: Math.max(0, offset - PAGE) }), text: "Previous" }));
    if (offset + shown < total) nav.append(h("a", { class: "button", href: hashWith(base, { ...q, offset: offset + PAGE }), text: "Next" }));
    return nav;
  }

  // ---- rule editor -------------------------------------------------------------------------

  const BLANK = () => ({ name: "", trigger: "new_order", trigger_options: {}, conditions: { match: "all", conditions: [] },
    actions: [{ type: "add_order_note", params: {}, delay: null }], priority: 10, enabled: true, group_label: "",
    frequency: { once_per_customer: false, per_days: null }, exit_conditions: [], holdout_percent: 0, goals: [],
    when_disabled: "exit" });

  async function editorPage(id) {
    const sch = await schema();
    let rule = BLANK();
    let history = [];
    let versions = null;
    if (id !== null) {
      const [res, hist, vers, runs] = await Promise.all([api("GET", `/v1/rules/${id}`), api("GET", `/v1/rules/${id}/history`),
        api("GET", `/v1/rules/${id}/versions`), api("GET", `/v1/rules/${id}/runs`)]);
      if (!res.ok) return h("section", { "data-title": "Rule" }, h("h1", { text: "Rule" }), note("error", errorText(res)));
      rule = { ...BLANK(), ...specOf(res.data) };
      rule.version = res.data.version;
      history = hist.ok ? hist.data.entries : [];
      versions = vers.ok ? { list: vers.data.versions, runs: runs.ok ? runs.data.versions : [] } : null;
    }
    if (!rule.conditions || !Array.isArray(rule.conditions.conditions)) {
      rule.conditions = rule.conditions && rule.conditions.field ? { match: "all", conditions: [rule.conditions] } : { match: "all", conditions: [] };
    }
    const title = id === null ? "New rule" : `Rule ${id}: ${rule.name}`;
    const form = h("form", { class: "editor", novalidate: true });
    const page = h("section", { "data-title": title }, h("h1", { text: title }), form);
    const flash = sessionStorage.getItem(`${KEY}.saved`);
    if (flash) { sessionStorage.removeItem(`${KEY}.saved`); page.insertBefore(note("ok", flash), form); }
    buildEditor(form, rule, sch, id);
    if (versions) page.append(versionTable(versions.list, versions.runs));
    if (id !== null) page.append(historyList(history));
    return page;
  }

  function buildEditor(form, rule, sch, id) {
    const basics = h("fieldset", {}, h("legend", { text: "Rule" }),
      field("Name", bind(h("input", { type: "text", value: rule.name, "data-path": "name" }), (v) => { rule.name = v; })),
      field("Priority", bind(h("input", { type: "number", value: rule.priority, "data-path": "priority" }),
        (v) => { rule.priority = v === "" ? 10 : Number(v); }), "Lower runs first"),
      field("Group label", bind(h("input", { type: "text", value: rule.group_label || "", "data-path": "group_label" }),
        (v) => { rule.group_label = v; })),
      checkbox("Enabled", rule.enabled, "enabled", (v) => { rule.enabled = v; }));
    const trigger = h("fieldset", {}, h("legend", { text: "Trigger" }));
    const drawTrigger = () => {
      const spec = sch.triggers.find((t) => t.name === rule.trigger);
      const sel = h("select", { "data-path": "trigger", value: rule.trigger },
        groupBy(sch.triggers, "group").map(([g, ts]) => h("optgroup", { label: g }, ts.map((t) => h("option", { value: t.name, text: t.name })))));
      sel.addEventListener("change", () => { rule.trigger = sel.value; rule.trigger_options = {}; drawTrigger(); });
      setKids(trigger, h("legend", { text: "Trigger" }), field("When", sel, spec ? spec.description : ""),
        spec && spec.options ? schemaForm(spec.options, rule.trigger_options, "trigger_options", sch) : null);
    };
    drawTrigger();
    const conds = h("fieldset", { class: "conditions" }, h("legend", { text: "Conditions" }));
    const drawConds = () => setKids(conds, h("legend", { text: "Conditions" }),
      groupEl(rule.conditions, "conditions", sch, null, drawConds));
    drawConds();
    const steps = h("fieldset", { class: "steps" }, h("legend", { text: "Steps" }));
    const asJson = new Set(rule.actions.map((a, i) => (needsJson(a) ? i : -1)).filter((i) => i >= 0));
    const drawSteps = () => setKids(steps, h("legend", { text: "Steps" }),
      h("p", { class: "help", text: "A workflow step is an action, or a yes/no branch with steps on each side. Branches, A/B variants and weekday-and-time sends are edited as JSON (GET /v1/schema → workflow)." }),
      rule.actions.map((a, i) => stepEl(rule, i, sch, drawSteps, asJson)),
      h("div", { class: "inline" },
        h("button", { type: "button", text: "Add step", onclick: () => { rule.actions.push({ type: "add_order_note", params: {}, delay: "day 1" }); drawSteps(); } }),
        h("button", { type: "button", text: "Add branch", onclick: () => { asJson.add(rule.actions.length); rule.actions.push(BRANCH()); drawSteps(); } })));
    drawSteps();
    const freq = rule.frequency || (rule.frequency = {});
    const whenDisabled = h("select", { "data-path": "when_disabled", value: rule.when_disabled || "exit" },
      Object.entries(sch.workflow.when_disabled).map(([k, v]) => h("option", { value: k, text: `${k}: ${v}` })));
    whenDisabled.addEventListener("change", () => { rule.when_disabled = whenDisabled.value; });
    const limits = h("fieldset", {}, h("legend", { text: "Frequency, goals and exits" }),
      checkbox("At most once per customer, ever", !!freq.once_per_customer, "frequency.once_per_customer", (v) => { freq.once_per_customer = v; }),
      field("At most once per customer every N days", bind(h("input", { type: "number", min: 1, value: freq.per_days ?? "", "data-path": "frequency.per_days" }),
        (v) => { freq.per_days = v === "" ? null : Number(v); })),
      jsonInput("Exit conditions (JSON)", rule.exit_conditions || [], "exit_conditions", (v) => { rule.exit_conditions = v || []; },
        'e.g. [{"type": "ordered"}] — checked before each delayed step'),
      jsonInput("Goals (JSON)", rule.goals || [], "goals", (v) => { rule.goals = v || []; },
        'e.g. [{"type": "ordered"}] — reaching one ends the run as the workflow\'s conversion'),
      field("When disabled", whenDisabled),
      field("Holdout (% of customers kept out as a control group)", bind(h("input", { type: "number", min: 0, max: 50, step: "any", value: rule.holdout_percent ?? 0, "data-path": "holdout_percent" }),
        (v) => { rule.holdout_percent = v === "" ? 0 : Number(v); })));
    const save = h("button", { type: "submit", class: "primary", text: id === null ? "Create rule" : "Save rule" });
    const tools = h("div", { class: "actions" }, save,
      id !== null ? h("a", { class: "button", href: `#/dry-run?rule=${id}`, text: "Dry run" }) : null,
      id !== null ? h("button", { type: "button", class: "danger", text: "Delete", onclick: () => deleteRule(id) }) : null);
    form.append(basics, trigger, conds, steps, limits, tools);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const bad = form.querySelectorAll("[data-json-invalid]");
      if (bad.length) { showErrors(form, [...bad].map((el) => ({ field: el.dataset.path, message: "not valid JSON" })), "The rule was not saved."); return; }
      save.disabled = true;
      const res = id === null ? await api("POST", "/v1/rules", specOf(rule)) : await api("PUT", `/v1/rules/${id}`, specOf(rule));
      save.disabled = false;
      if (res.ok) {
        sessionStorage.setItem(`${KEY}.saved`, `Saved: version ${res.data.version}.`);
        if (id === null) location.hash = `#/rules/${res.data.id}`; else route();
        return;
      }
      const errors = res.data && Array.isArray(res.data.errors) ? res.data.errors : [{ field: "", message: errorText(res) }];
      showErrors(form, errors, `The rule was not saved: ${errors.length} problem${errors.length === 1 ? "" : "s"}.`);
    });
  }

  async function deleteRule(id) {
    if (!confirm(`Delete rule ${id} and its execution logs?`)) return;
    const res = await api("DELETE", `/v1/rules/${id}`);
    if (res.ok) location.hash = "#/rules"; else alert(errorText(res));
  }

  function groupBy(items, key) {
    const out = new Map();
    for (const it of items) { if (!out.has(it[key])) out.set(it[key], []); out.get(it[key]).push(it); }
    return [...out.entries()];
  }

  function bind(input, set) {
    input.addEventListener("input", () => set(input.value));
    input.addEventListener("change", () => set(input.value));
    return input;
  }

  function checkbox(label, checked, path, set) {
    const box = h("input", { type: "checkbox", checked, "data-path": path, id: nextId("c") });
    box.addEventListener("change", () => set(box.checked));
    return h("div", { class: "field check" }, box, h("label", { for: box.id, text: label }));
  }

  function jsonInput(label, value, path, set, help) {
    const text = JSON.stringify(value, null, 1);
    const area = h("textarea", { rows: Math.min(20, Math.max(3, text.split("\n").length)), "data-path": path, value: text });
    area.addEventListener("input", () => {
      try { set(area.value.trim() === "" ? null : JSON.parse(area.value)); area.removeAttribute("data-json-invalid"); } catch (e) { area.setAttribute("data-json-invalid", ""); }
    });
    return field(label, area, help);
  }

  // A form for a JSON schema object (trigger options, action parameters): one input per
  // property, by type; what it cannot draw is a JSON text area.
  function schemaForm(js, values, base, sch) {
    const box = h("div", { class: "params" });
    const required = new Set(js.required || []);
    for (const [name, prop0] of Object.entries(js.properties || {})) {
      const prop = plain(prop0, js);
      const path = `${base}.${name}`;
      const label = `${prop.title || name}${required.has(name) ? " *" : ""}`;
      const set = (v) => { if (v === undefined || v === "") delete values[name]; else values[name] = v; };
      const cur = values[name];
      if (prop.type === "boolean") {
        box.append(checkbox(label, cur ?? prop.default ?? false, path, set));
      } else if (prop.enum) {
        box.append(field(label, bind(h("select", { "data-path": path, value: cur ?? "" }, h("option", { value: "", text: "(default)" }),
          prop.enum.map((v) => h("option", { value: v, text: v }))), set), prop.description));
      } else if (prop.type === "integer" || prop.type === "number") {
        box.append(field(label, bind(h("input", { type: "number", step: "any", "data-path": path, value: cur ?? "" }),
          (v) => set(v === "" ? undefined : Number(v))), prop.description));
      } else if (prop.type === "string") {
        const long = /html|body|text|note|message|description|content/i.test(name);
        const input = long ? h("textarea", { rows: name === "html" || name === "body" ? 6 : 3, "data-path": path, value: cur ?? "" })
          : h("input", { type: "text", "data-path": path, value: cur ?? "" });
        box.append(field(label, bind(input, set), prop.description));
      } else if (prop.type === "array" && prop.items && ["string", "integer", "number"].includes(plain(prop.items, js).type)) {
        const numeric = plain(prop.items, js).type !== "string";
        box.append(field(label, bind(h("input", { type: "text", "data-path": path, value: Array.isArray(cur) ? cur.join(", ") : "" }),
          (v) => set(v.trim() === "" ? undefined : v.split(",").map((s) => s.trim()).filter(Boolean).map((s) => (numeric && !isNaN(Number(s)) ? Number(s) : s)))),
          `${prop.description || ""} (comma-separated)`));
      } else {
        box.append(jsonInput(label, cur ?? prop.default ?? null, path, (v) => set(v === null ? undefined : v), prop.description));
      }
    }
    return box;
  }

  function plain(prop, root) {
    // anyOf [X, null] → X; a $ref → its definition (keeping the outer title and description)
    let p = prop;
    if (p.$ref && root.$defs) p = { ...root.$defs[p.$ref.split("/").pop()], title: prop.title, description: prop.description };
    if (Array.isArray(p.anyOf)) {
      const first = p.anyOf.find((x) => x.type !== "null") || {};
      p = { ...first, title: prop.title, description: prop.description, default: prop.default };
    }
    return p;
  }

  // ---- nested AND/OR condition builder -------------------------------------------------------

  function groupEl(node, path, sch, remove, redraw) {
    node.match = node.match || "all";
    node.conditions = node.conditions || [];
    const match = h("select", { "data-path": `${path}.match`, "aria-label": "Match", value: node.match },
      h("option", { value: "all", text: "all (AND)" }), h("option", { value: "any", text: "any (OR)" }));
    match.addEventListener("change", () => { node.match = match.value; });
    const box = h("div", { class: "group", "data-group": path },
      h("div", { class: "inline" }, h("span", { text: "Match" }), match, h("span", { text: "of these:" }),
        remove ? h("button", { type: "button", class: "small", text: "Remove group", onclick: remove }) : null),
      h("div", { class: "children" }, node.conditions.map((c, i) => {
        const at = `${path}.conditions[${i}]`;
        const drop = () => { node.conditions.splice(i, 1); redraw(); };
        return c && c.field !== undefined ? condEl(c, at, sch, drop) : groupEl(c, at, sch, drop, redraw);
      })),
      h("div", { class: "inline" },
        h("button", { type: "button", class: "small", text: "Add condition", onclick: () => { node.conditions.push(newLeaf(sch)); redraw(); } }),
        h("button", { type: "button", class: "small", text: "Add group", onclick: () => { node.conditions.push({ match: "any", conditions: [newLeaf(sch)] }); redraw(); } })));
    return box;
  }

  function newLeaf(sch) {
    const f = sch.fields[0];
    return { field: f.name, operator: f.operators[0], value: "" };
  }

  const LIST_OPS = new Set(["in", "not_in"]);
  const valueKind = (op) => (LIST_OPS.has(op) ? "list" : DAY_OPS.has(op) ? "days" : "one");

  function condEl(c, path, sch, remove) {
    const row = h("div", { class: "cond", "data-cond": path });
    const draw = () => {
      const spec = sch.fields.find((f) => f.name === c.field) || { type: "string", operators: sch.operators.map((o) => o.name) };
      const fsel = h("select", { "data-path": `${path}.field`, "aria-label": "Field", value: c.field },
        groupBy(sch.fields, "scope").map(([g, fs]) => h("optgroup", { label: g }, fs.map((f) => h("option", { value: f.name, text: f.name, title: f.description })))));
      fsel.addEventListener("change", () => {
        const nf = sch.fields.find((f) => f.name === fsel.value);
        c.field = fsel.value;
        if (!nf.operators.includes(c.operator)) c.operator = nf.operators[0];
        c.value = "";
        draw();
      });
      const osel = h("select", { "data-path": `${path}.operator`, "aria-label": "Operator", value: c.operator },
        spec.operators.map((o) => h("option", { value: o, text: o, title: (sch.operators.find((x) => x.name === o) || {}).description })));
      osel.addEventListener("change", () => {
        if (valueKind(c.operator) !== valueKind(osel.value)) c.value = "";  // a list, a day count, one value
        c.operator = osel.value;
        draw();
      });
      // redrawn on each choice: the keyboard stays where it was
      const focused = row.contains(document.activeElement) ? document.activeElement.dataset.path : null;
      setKids(row, fsel, osel, valueInput(c, spec, path),
        h("button", { type: "button", class: "small", text: "Remove", "aria-label": `Remove condition on ${c.field}`, onclick: remove }));
      if (focused) { const el = row.querySelector(`[data-path="${CSS.escape(focused)}"]`); if (el) el.focus(); }
    };
    draw();
    return row;
  }

  // The value input that fits the field and operator: the field's closed set of values, the
  // store's categories or tags by name (stored as their ids), countries by name, a date or a
  // number of days for the date operators, comma-separated lists for in / not_in.
  function valueInput(c, spec, path) {
    const list = LIST_OPS.has(c.operator);
    const attrs = { "data-path": `${path}.value`, "aria-label": "Value" };
    const num = (s) => (spec.type === "number" && s !== "" && !isNaN(Number(s)) ? Number(s) : s);
    if (spec.type === "date") return dateInput(c, attrs);
    if (spec.picker === "country") return choices(c, attrs, list, countryChoices());
    if (spec.picker === "category" || spec.picker === "tag") return termPicker(c, attrs, list, spec.picker);
    if (spec.values) return choices(c, attrs, list, spec.values.map((v) => [v, v]));
    if (list) {
      const input = h("input", { ...attrs, type: "text", placeholder: "comma-separated", value: Array.isArray(c.value) ? c.value.join(", ") : (c.value ?? "") });
      input.addEventListener("input", () => { c.value = input.value.split(",").map((s) => s.trim()).filter(Boolean).map(num); });
      return input;
    }
    const type = spec.type === "number" ? "number" : "text";
    const input = h("input", { ...attrs, type, step: type === "number" ? "any" : null, value: c.value ?? "" });
    input.addEventListener("input", () => { c.value = num(input.value); });
    return input;
  }

  const DAY_OPS = new Set(["within_last_days", "not_within_last_days"]);

  function dateInput(c, attrs) {
    if (DAY_OPS.has(c.operator)) {
      const days = h("input", { ...attrs, type: "number", min: 1, step: 1, "aria-label": "Value (days)", value: /^\d+$/.test(String(c.value ?? "")) ? c.value : "" });
      days.addEventListener("input", () => { c.value = days.value === "" ? "" : Number(days.value); });
      return h("span", { class: "inline" }, days, h("span", { text: "days" }));
    }
    const day = h("input", { ...attrs, type: "date", value: /^\d{4}-\d{2}-\d{2}$/.test(String(c.value ?? "")) ? c.value : "" });
    day.addEventListener("input", () => { c.value = day.value; });
    return day;
  }

  // A select of [value, label] pairs: one value, or several for in / not_in.
  function choices(c, attrs, list, pairs) {
    if (!list) {
      const sel = h("select", { ...attrs, value: c.value ?? "" }, h("option", { value: "", text: "choose…" }), pairs.map(([v, t]) => h("option", { value: v, text: t })));
      sel.addEventListener("change", () => { c.value = sel.value; });
      return sel;
    }
    const chosen = new Set((Array.isArray(c.value) ? c.value : []).map(String));
    const sel = h("select", { ...attrs, multiple: true, size: 6 }, pairs.map(([v, t]) => h("option", { value: v, text: t, selected: chosen.has(String(v)) })));
    sel.addEventListener("change", () => { c.value = [...sel.selectedOptions].map((o) => o.value); });
    return sel;
  }

  // Categories and tags: the catalog's names, the conditions' ids. Drawn at once with the
  // ids the condition already holds, filled in when the catalog answers.
  function termPicker(c, attrs, list, taxonomy) {
    const held = (Array.isArray(c.value) ? c.value : c.value === "" || c.value === undefined ? [] : [c.value]).map(String);
    const box = h("span", { class: "picker" });
    const draw = (terms) => {
      const known = new Set(terms.map((t) => String(t.id)));
      const pairs = [...terms.map((t) => [String(t.id), t.name ? `${t.name} (${t.id})` : `${taxonomy} ${t.id}`]),
        ...held.filter((v) => !known.has(v)).map((v) => [v, `${taxonomy} ${v} (not in the catalog)`])];
      if (!pairs.length) {
        const input = h("input", { ...attrs, type: "text", placeholder: `${taxonomy} ids, comma-separated`, value: held.join(", ") });
        input.addEventListener("input", () => {
          const ids = input.value.split(",").map((s) => s.trim()).filter(Boolean);
          c.value = list ? ids : (ids[0] || "");
        });
        setKids(box, input, h("small", { class: "help", text: `The catalog holds no ${taxonomy === "tag" ? "tags" : "categories"} yet: type ids.` }));
        return;
      }
      setKids(box, choices(c, attrs, list, pairs));
    };
    draw([]);
    catalogTerms(taxonomy).then((terms) => {
      const focused = box.contains(document.activeElement);
      draw(terms);
      if (focused) box.querySelector("select, input").focus();
    }).catch(() => { /* the ids typed as text */ });
    return box;
  }

  // ISO 3166-1 alpha-2 codes, named in the reader's language by the browser.
  const COUNTRIES = ("AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
    "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE " +
    "GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP " +
    "KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF " +
    "NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN " +
    "SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW").split(" ");
  let countryPairs = null;
  function countryChoices() {
    if (!countryPairs) {
      let names = null;
      try { names = new Intl.DisplayNames([navigator.language || "en", "en"], { type: "region" }); } catch (e) { /* codes alone */ }
      countryPairs = COUNTRIES.map((code) => [code, names ? `${names.of(code) || code} (${code})` : code])
        .sort((a, b) => a[1].localeCompare(b[1]));
    }
    return countryPairs;
  }

  // ---- steps -------------------------------------------------------------------------------

  // What the step form draws: an action's type, delay and parameters. Anything else (a
  // branch, an id, a weekday-and-time send, A/B variants) is edited as the step's JSON.
  const FORM_KEYS = new Set(["type", "params", "delay"]);
  const needsJson = (a) => !a || a.type === "branch" || Object.keys(a).some((k) => !FORM_KEYS.has(k) && a[k] !== null && a[k] !== undefined);
  const BRANCH = () => ({ type: "branch", condition: { type: "email_opened", within: "3d" },
    yes: { steps: [], then: "continue" }, no: { steps: [{ type: "send_email", params: { subject: "", text: "" } }], then: "continue" } });

  function stepEl(rule, i, sch, redraw, asJson) {
    const a = rule.actions[i];
    const move = (to) => {
      const [x] = rule.actions.splice(i, 1);
      rule.actions.splice(to, 0, x);
      const was = [...asJson].map((j) => (j === i ? to : j === to ? i : j));
      asJson.clear(); was.forEach((j) => asJson.add(j));
      redraw();
    };
    const remove = () => {
      rule.actions.splice(i, 1);
      const was = [...asJson].filter((j) => j !== i).map((j) => (j > i ? j - 1 : j));
      asJson.clear(); was.forEach((j) => asJson.add(j));
      redraw();
    };
    const json = asJson.has(i);
    const kind = a && a.type === "branch" ? "branch" : (a && a.type) || "step";
    const toggle = h("button", { type: "button", class: "small", text: json ? "Edit as form" : "Edit as JSON",
      disabled: json && needsJson(a), title: json && needsJson(a) ? "This step has parts only JSON can show" : null,
      onclick: () => { if (json) asJson.delete(i); else asJson.add(i); redraw(); } });
    const body = json ? [jsonInput(`Step ${i + 1} (JSON)`, a, `actions[${i}]`, (v) => { if (v !== null) rule.actions[i] = v; },
      a && a.type === "branch" ? "A yes/no branch: condition, then the steps of each side (yes.steps, no.steps) and where each goes (then)" : "")]
      : stepForm(a, i, sch, redraw);
    return h("fieldset", { class: "step", "data-step": i }, h("legend", { text: `Step ${i + 1}${json ? ` · ${kind}` : ""}` }),
      body,
      h("div", { class: "inline" }, toggle,
        i > 0 ? h("button", { type: "button", class: "small", text: "Move up", onclick: () => move(i - 1) }) : null,
        i < rule.actions.length - 1 ? h("button", { type: "button", class: "small", text: "Move down", onclick: () => move(i + 1) }) : null,
        rule.actions.length > 1 ? h("button", { type: "button", class: "small", text: "Remove step", onclick: remove }) : null));
  }

  function stepForm(a, i, sch, redraw) {
    a.params = a.params || {};
    const spec = sch.actions.find((x) => x.name === a.type);
    const type = h("select", { "data-path": `actions[${i}].type`, value: a.type }, sch.actions.map((x) => h("option", { value: x.name, text: x.name })));
    type.addEventListener("change", () => { a.type = type.value; a.params = {}; redraw(); });
    const delay = bind(h("input", { type: "text", "data-path": `actions[${i}].delay`, placeholder: "immediately", value: a.delay || "" }),
      (v) => { a.delay = v.trim() === "" ? null : v; });
    return [field("Action", type, spec ? spec.description : ""),
      field("Delay", delay, "immediately, 30m, hour 24, day 3, week 1 — from the trigger"),
      spec ? schemaForm(spec.params, a.params, `actions[${i}].params`, sch) : null];
  }

  function versionTable(list, runs) {
    const byVersion = Object.fromEntries(runs.map((r) => [r.version, r]));
    const cols = ["runs", "active", "completed", "goal_reached", "exited"];
    return h("section", { class: "versions" }, h("h2", { text: "Versions and runs" }),
      h("p", { class: "help", text: "Every edit of what a run does is a new version; a run finishes on the version it started with." }),
      list.length ? h("div", { class: "scroll" }, h("table", { class: "versions" },
        h("thead", {}, h("tr", {}, ["Version", "Saved", "Runs", "Active", "Completed", "Goal reached", "Exited", "Content"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, [...list].reverse().map((v) => h("tr", { "data-version": v.version },
          h("td", {}, `${v.version}`, v.current ? h("span", { class: "status succeeded", text: "current" }) : null),
          h("td", { text: fmtTime(v.created_at) }),
          cols.map((c) => h("td", { "data-col": c, text: byVersion[v.version] ? byVersion[v.version][c] : 0 })),
          h("td", {}, h("details", {}, h("summary", { text: "as saved" }), pretty(v.spec)))))))) : h("p", { class: "muted", text: "No versions recorded." }));
  }

  function historyList(entries) {
    return h("section", { class: "history" }, h("h2", { text: "Change history" }),
      entries.length ? h("ol", {}, entries.map((e) => h("li", {},
        h("strong", { text: e.action }), e.version ? ` · version ${e.version}` : "", ` · ${fmtTime(e.created_at)}`, e.actor ? ` · ${e.actor}` : "",
        e.rule ? h("details", {}, h("summary", { text: "as saved" }), pretty(e.rule)) : null))) : h("p", { class: "muted", text: "No recorded changes." }));
  }

  // ---- workflow templates --------------------------------------------------------------------

  async function templatesPage() {
    const res = await api("GET", "/v1/templates");
    const page = h("section", { "data-title": "Workflow templates" }, h("h1", { text: "Workflow templates" }),
      h("p", { class: "muted", text: "Shipped workflows: preview the rule each installs, then install it for this store." }));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    page.append(h("div", { class: "cards" }, res.data.templates.map(templateCard)));
    return page;
  }

  function templateCard(t) {
    const out = h("div", { class: "out" });
    const enable = h("input", { type: "checkbox", id: nextId("en") });
    const install = h("button", { type: "button", text: "Install" });
    install.addEventListener("click", async () => {
      install.disabled = true;
      const res = await api("POST", `/v1/templates/${encodeURIComponent(t.name)}/install`, { enabled: enable.checked });
      install.disabled = false;
      setKids(out, res.ok ? h("p", { class: "note ok", role: "status" }, "Installed as ", h("a", { href: `#/rules/${res.data.rule_id}`, text: `rule ${res.data.rule_id}` }))
        : note("error", errorText(res)));
    });
    const preview = h("button", { type: "button", text: "Preview rule" });
    preview.addEventListener("click", async () => {
      const res = await api("GET", `/v1/templates/${encodeURIComponent(t.name)}`);
      setKids(out, res.ok ? pretty(res.data.rule) : note("error", errorText(res)));
    });
    return h("article", { class: "card" }, h("h2", { text: t.title }), h("p", { text: t.description }),
      h("p", { class: "muted", text: `Trigger: ${t.trigger}` }),
      h("ol", { class: "timeline" }, t.steps.map((s) => h("li", { text: `${s.delay || "immediately"}: ${s.type}` }))),
      h("div", { class: "actions" }, preview, h("span", { class: "check" }, enable, h("label", { for: enable.id, text: "enabled" })), install), out);
  }

  // ---- dry run -------------------------------------------------------------------------------

  async function dryRunPage() {
    const q = query();
    const res = await api("GET", "/v1/rules?limit=500");
    const page = h("section", { "data-title": "Dry run" }, h("h1", { text: "Dry run" }),
      h("p", { class: "muted", text: "Simulate a rule on a real order or customer of the store: the trigger, each condition, consent, and the actions rendered — nothing is sent." }));
    const rules = res.ok ? res.data.rules : [];
    const ruleSel = h("select", { "data-path": "rule", value: q.rule || (rules[0] ? String(rules[0].id) : "") },
      rules.length ? null : h("option", { value: "", text: "no rules yet" }),
      rules.map((r) => h("option", { value: String(r.id), text: `${r.name} (#${r.id})` })));
    if (q.rule && !rules.some((r) => String(r.id) === q.rule)) ruleSel.append(h("option", { value: q.rule, text: `rule #${q.rule}`, selected: true }));
    const subject = { kind: q.customer ? "customer_id" : q.order ? "order_id" : null, id: Number(q.customer || q.order) || null };
    const search = h("input", { type: "search", "data-path": "subject", autocomplete: "off", value: q.order || q.customer || "",
      placeholder: "order number, customer id or email" });
    const found = h("fieldset", { class: "found", "aria-live": "polite" }, h("legend", { text: "Pick one" }));
    const out = h("div", { class: "dry-result", "aria-live": "polite" });
    const run = h("button", { type: "submit", class: "primary", text: "Run dry run" });
    const find = h("button", { type: "button", text: "Search" });
    const form = h("form", { class: "dry-run", novalidate: true },
      field("Rule", ruleSel),
      h("div", { class: "inline search" }, field("Find an order or customer", search, "An order number, a customer id or a whole email address; empty: the newest orders"), find),
      found, h("div", { class: "actions" }, run));
    const pick = (kind, id) => { subject.kind = kind; subject.id = id; };
    let seq = 0;
    const lookUp = async () => {
      const mine = ++seq;
      const r = await api("GET", `/v1/search?q=${encodeURIComponent(search.value.trim())}`);
      if (mine !== seq) return;
      setKids(found, h("legend", { text: "Pick one" }), r.ok ? subjectChoices(r.data, subject, pick) : note("error", errorText(r)));
      found.dataset.query = search.value.trim();
    };
    let timer = null;
    search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(lookUp, 250); });
    search.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(timer); lookUp(); } });
    find.addEventListener("click", () => { clearTimeout(timer); lookUp(); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      if (!ruleSel.value || !subject.kind) {
        showErrors(form, [!ruleSel.value ? { field: "rule", message: "choose a rule" } : { field: "subject", message: "find an order or customer and pick one" }]);
        return;
      }
      run.disabled = true;
      out.removeAttribute("data-done");
      setKids(out, h("p", { class: "muted", text: "Running…" }));
      const r = await api("POST", `/v1/rules/${Number(ruleSel.value)}/dry-run`, { [subject.kind]: subject.id });
      run.disabled = false;
      if (!r.ok) {
        setKids(out);
        const errs = r.data && Array.isArray(r.data.errors) ? r.data.errors.map((e) => ({ field: "subject", message: e.message })) : [{ field: r.status === 404 && /rule/.test(errorText(r)) ? "rule" : "subject", message: errorText(r) }];
        showErrors(form, errs);
        return;
      }
      setKids(out, dryResult(r.data));
      out.dataset.done = "1";
    });
    page.append(form, out);
    await lookUp();
    return page;
  }

  // The search's answer as one radio group: orders, then customers (a guest has no account
  // to simulate on: their orders are). A number nobody recorded can still be tried as an
  // order or a customer id: the dry run asks the store.
  function subjectChoices(d, subject, pick) {
    const name = nextId("subject");
    const choice = (kind, id, label, extra) => {
      const radio = h("input", { type: "radio", name, value: `${kind}:${id}`, id: nextId("s"), checked: subject.kind === kind && subject.id === id });
      radio.addEventListener("change", () => { if (radio.checked) pick(kind, id); });
      return h("div", { class: "choice", "data-subject": `${kind}:${id}` }, radio, h("label", { for: radio.id }, h("strong", { text: label }), extra ? ` · ${extra}` : ""));
    };
    const orders = d.orders.map((o) => choice("order_id", o.order_id, `Order #${o.order_id}`,
      [o.status, o.total !== null ? money(o.total, o.currency) : "", o.email || o.customer_key, fmtTime(o.created_at)].filter(Boolean).join(" · ")));
    const customers = d.customers.map((c) => (c.customer_id
      ? choice("customer_id", c.customer_id, `Customer #${c.customer_id}`, [c.email, `${c.order_count} order${c.order_count === 1 ? "" : "s"}`].filter(Boolean).join(" · "))
      : h("p", { class: "muted", text: `Guest ${c.email || c.customer_key}: no account to simulate on — pick one of their orders.` })));
    const number = /^#?\s*(\d{1,15})$/.exec(d.query);
    const tries = [];
    if (number && !d.orders.some((o) => o.order_id === Number(number[1]))) tries.push(choice("order_id", Number(number[1]), `Order #${number[1]}`, "not recorded by wooflow: the store is asked"));
    if (number && !d.customers.some((c) => c.customer_id === Number(number[1]))) tries.push(choice("customer_id", Number(number[1]), `Customer #${number[1]}`, "not recorded by wooflow: the store is asked"));
    const all = [...orders, ...customers, ...tries];
    if (!all.length) {
      return h("p", { class: "muted", text: d.query ? `Nothing found for “${d.query}”: search by order number, customer id or a whole email address.` : "No orders recorded yet: search by order number or customer id." });
    }
    return h("div", { class: "choices" }, all);
  }

  function verdict(ok) {
    return h("span", { class: ok ? "yes" : "no", text: ok ? "✓" : "✗", "aria-label": ok ? "holds" : "does not hold" });
  }

  function condTree(node) {
    if (!node) return null;
    const kids = Array.isArray(node.conditions) ? h("ul", {}, node.conditions.map((k) => h("li", {}, condTree(k)))) : null;
    return h("div", { class: "verdict" }, verdict(!!node.result), " ", node.reason || "", kids);
  }

  function dryResult(d) {
    const box = h("div", {},
      h("h2", { text: `${d.rule_name} on ${d.subject.type} ${d.subject.id}` }),
      h("p", { class: d.would_run ? "note ok" : "note warn", text: d.would_run ? "This rule would run." : (d.enabled ? "This rule would not run." : "This rule is disabled: it would not run.") }),
      h("h3", { text: "Trigger" }), h("p", {}, verdict(d.trigger.would_fire_now), " ", d.trigger.reason),
      h("h3", { text: "Conditions" }), condTree(d.conditions),
      h("h3", { text: "Consent" }), consentView(d.consent),
      h("h3", { text: "Planned actions" }), h("ol", { class: "planned" }, d.actions.map(plannedStep)));
    return box;
  }

  function consentView(c) {
    if (!c || !c.checked) return h("p", { class: "muted", text: (c && c.note) || "not checked" });
    const needed = (c.required_by_steps || []).length > 0;
    return h("div", {}, needed ? null : h("p", { class: "muted", text: "Not needed: no step is a marketing message. On record:" }),
      h("ul", {}, Object.entries(c.channels || {}).map(([ch, v]) => h("li", {}, verdict(!!v.granted), ` ${ch}: ${v.reason}`))));
  }

  function plannedStep(a) {
    const d = a.details || {};
    const li = h("li", { class: "planned-step" }, h("p", {}, h("strong", { text: a.type }), ` · ${a.delay || "immediately"} · ${a.status}: ${a.message || ""}`));
    if (typeof d.html === "string" || typeof d.text === "string") {
      const frame = h("iframe", { sandbox: "", title: "Rendered email (HTML)", class: "email", referrerpolicy: "no-referrer" });
      frame.srcdoc = d.html || "";
      li.append(h("div", { class: "email-preview" },
        h("p", {}, h("strong", { text: "To: " }), d.to || ""), h("p", {}, h("strong", { text: "Subject: " }), h("span", { class: "subject", text: d.subject || "" })),
        d.html ? frame : null, h("details", { open: true }, h("summary", { text: "Plain text" }), h("pre", { class: "email-text", text: d.text || "" }))));
    } else if (Object.keys(d).length) {
      li.append(h("details", {}, h("summary", { text: "details" }), pretty(d)));
    }
    return li;
  }

  // ---- execution logs ----------------------------------------------------------------------

  async function logsPage() {
    const q = query();
    const filter = JSON.stringify(["rule_id", "status", "customer_key", "since", "before", "dry_run"].map((k) => q[k] || ""));
    if (logCursors.filter !== filter) { logCursors.filter = filter; logCursors.stack = []; }
    const depth = Math.min(Number(q.page || 0), logCursors.stack.length);
    const params = new URLSearchParams({ limit: PAGE });
    for (const k of ["rule_id", "status", "customer_key", "dry_run"]) if (q[k]) params.set(k, q[k]);
    for (const k of ["since", "before"]) if (q[k]) params.set(k, new Date(q[k]).toISOString());
    if (depth > 0) params.set("cursor", logCursors.stack[depth - 1]);
    const res = await api("GET", `/v1/logs?${params}`);
    const page = h("section", { "data-title": "Execution logs" }, h("h1", { text: "Execution logs" }), logsFilter(q));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const { logs, next_cursor: next } = res.data;
    if (next) logCursors.stack[depth] = next;
    page.append(logs.length ? h("div", { class: "scroll" }, h("table", { class: "logs" },
      h("thead", {}, h("tr", {}, ["Executed", "Rule", "Step", "Action", "Status", "Customer", "Message"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, logs.map((l) => h("tr", { "data-status": l.status },
        h("td", {}, h("a", { href: `#/logs/${encodeURIComponent(l.log_id)}`, text: fmtTime(l.executed_at) })),
        h("td", {}, h("a", { href: hashWith("#/logs", { ...q, rule_id: l.rule_id, page: "" }), text: `#${l.rule_id}` })),
        h("td", { text: l.step }), h("td", { text: l.action_type }), h("td", {}, h("span", { class: `status ${l.status}`, text: l.status })),
        h("td", { text: l.customer_key }), h("td", { class: "msg", text: l.message })))))) : h("p", { class: "muted", text: "No entries match." }));
    const nav = h("nav", { class: "pager", "aria-label": "Pages" });
    if (depth > 0) nav.append(h("a", { class: "button", href: hashWith("#/logs", { ...q, page: depth - 1 || "" }), text: "Newer" }));
    if (next) nav.append(h("a", { class: "button", href: hashWith("#/logs", { ...q, page: depth + 1 }), text: "Older" }));
    page.append(nav);
    return page;
  }

  function logsFilter(q) {
    const rule = h("input", { type: "number", min: 1, name: "rule_id", value: q.rule_id || "" });
    const status = h("select", { name: "status", value: q.status || "" }, ["", "succeeded", "failed", "skipped", "dead_lettered", "exited", "dry_run"].map((s) => h("option", { value: s, text: s || "any status" })));
    const customer = h("input", { type: "text", name: "customer_key", value: q.customer_key || "", placeholder: "c42" });
    const since = h("input", { type: "datetime-local", name: "since", value: q.since || "" });
    const before = h("input", { type: "datetime-local", name: "before", value: q.before || "" });
    const dry = h("select", { name: "dry_run", value: q.dry_run || "" }, h("option", { value: "", text: "live and dry runs" }),
      h("option", { value: "false", text: "live only" }), h("option", { value: "true", text: "dry runs only" }));
    const form = h("form", { class: "filters", role: "search" }, field("Rule id", rule), field("Status", status), field("Customer", customer),
      field("From", since), field("Before", before), field("Runs", dry), h("button", { type: "submit", text: "Filter" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = hashWith("#/logs", { rule_id: rule.value, status: status.value, customer_key: customer.value.trim(), since: since.value, before: before.value, dry_run: dry.value });
    });
    return form;
  }

  async function logDetailPage(logId) {
    const res = await api("GET", `/v1/logs/${encodeURIComponent(logId)}`);
    const page = h("section", { "data-title": "Execution" }, h("h1", { text: "Execution" }));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const l = res.data;
    const rows = [["Status", l.status], ["Rule", `#${l.rule_id}`], ["Step", l.step], ["Action", l.action_type], ["Customer", l.customer_key],
      ["Event", l.event_id], ["Attempt", l.attempt], ["Duration", `${l.duration_ms.toFixed(1)} ms`], ["Executed", fmtTime(l.executed_at)],
      ["Logged", fmtTime(l.logged_at)], ["Dry run", l.dry_run ? "yes" : "no"], ["Idempotency key", l.idempotency_key], ["Message", l.message]];
    page.append(h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])),
      h("h2", { text: "Details" }), pretty(l.details),
      h("h2", { text: "The action's claim and result" }), l.execution ? pretty(l.execution) : h("p", { class: "muted", text: "No claim (a dry run, or an exit)." }),
      h("p", {}, h("a", { href: hashWith("#/logs", { rule_id: l.rule_id }), text: "More of this rule" })));
    return page;
  }

  // ---- analytics ---------------------------------------------------------------------------

  // From /v1/analytics: the funnel of each rule (and of the store), revenue per day and
  // currency, and the holdout lift with its 95% interval. Charts by uPlot; every chart comes
  // with the table of its numbers (readable without the picture, by keyboard and screen reader).
  const STAGES = [
    ["Triggered", (f) => total(f.executions), "steps run, whatever their outcome (held out, skipped and failed included)"],
    ["Executed", (f) => (f.executions || {}).succeeded || 0, "steps that succeeded"],
    ["Delivered", (f) => f.sends, "emails and text messages sent"],
    ["Opened", (f) => f.opened, "messages opened (or clicked), once per message"],
    ["Clicked", (f) => f.clicked, "messages with a link clicked, once per message"],
    ["Converted", (f) => f.conversions, "orders credited to the messages"],
  ];
  const SERIES_COLOURS = ["#2f5ea8", "#1f7a3a", "#b3261e", "#8a5a00", "#6a4fa3", "#0b7285"];

  function range(q) {
    const iso = /^\d{4}-\d{2}-\d{2}$/;
    return { since: iso.test(q.since || "") ? q.since : "", until: iso.test(q.until || "") ? q.until : "" };
  }

  function rangeForm(base, r) {
    const since = h("input", { type: "date", name: "since", value: r.since });
    const until = h("input", { type: "date", name: "until", value: r.until });
    const form = h("form", { class: "filters", role: "search" }, field("From (UTC day)", since), field("To (UTC day)", until),
      h("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = hashWith(base, { since: since.value, until: until.value }); });
    const today = new Date();
    const ago = (n) => new Date(today.getTime() - (n - 1) * 86400e3).toISOString().slice(0, 10);
    const quick = h("p", { class: "inline quick" }, "Last:", [7, 30, 90, 365].map((n) => h("a", { href: hashWith(base, { since: ago(n), until: today.toISOString().slice(0, 10) }), text: `${n} days` })));
    return [form, quick];
  }

  function rangeParams(r) {
    const p = new URLSearchParams();
    if (r.since) p.set("since", r.since);
    if (r.until) p.set("until", r.until);
    return p.toString();
  }

  function attributionText(a) {
    return `Orders count for a message within ${a.window_days} day${a.window_days === 1 ? "" : "s"} of its ${a.touch === "send" ? "send" : "last open or click"}${a.count_machine ? " (opens by mail scanners included)" : ""}.`;
  }

  function liftText(hd) {
    if (!hd) return "—";
    if (!hd.conversion_lift) return "too few customers";
    const pp = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(v * 100).toFixed(1)}`;
    const i = hd.conversion_lift;
    return `${pp(i.estimate)} pp [${pp(i.low)}, ${pp(i.high)}]${hd.conclusive ? "" : " · sample too small"}`;
  }

  async function analyticsPage() {
    const r = range(query());
    const res = await api("GET", `/v1/analytics/summary?${rangeParams(r)}`);
    const page = h("section", { "data-title": "Analytics" }, h("h1", { text: "Analytics" }), rangeForm("#/analytics", r));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const d = res.data;
    page.append(h("p", { class: "muted period" }, `${d.since} – ${d.until} (UTC days). ${attributionText(d.attribution)}`));
    const uPlot = await charts().catch((e) => { page.append(note("error", e.message)); return null; });
    page.append(h("h2", { text: "All rules" }), funnelFigure(uPlot, d.totals, "The store's funnel"),
      h("p", {}, h("strong", { text: "Revenue: " }), moneyList(d.totals.revenue)));
    page.append(h("h2", { text: "Per rule" }));
    if (!d.rules.length) { page.append(h("p", { class: "muted", text: "No rules yet." })); return page; }
    page.append(h("div", { class: "scroll" }, h("table", { class: "analytics-rules" },
      h("thead", {}, h("tr", {}, ["Rule", ...STAGES.map(([n]) => n), "Revenue", "Holdout lift (conversion, 95%)"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, d.rules.map((rule) => h("tr", { "data-rule": rule.rule_id },
        h("td", {}, h("a", { href: hashWith(`#/analytics/${rule.rule_id}`, r), text: rule.name })),
        STAGES.map(([n, get]) => h("td", { "data-stage": n, text: get(rule) })),
        h("td", { "data-col": "revenue", text: moneyList(rule.revenue) }),
        h("td", { "data-col": "lift", text: liftText(rule.holdout) })))))));
    return page;
  }

  async function ruleAnalyticsPage(id) {
    const r = range(query());
    const res = await api("GET", `/v1/analytics/rules/${id}?${rangeParams(r)}`);
    const page = h("section", { "data-title": "Rule analytics" });
    if (!res.ok) { page.append(h("h1", { text: "Rule analytics" }), note("error", errorText(res))); return page; }
    const d = res.data;
    page.append(h("h1", { text: `Analytics: ${d.name}` }),
      h("p", { class: "inline" }, h("a", { href: hashWith("#/analytics", r), text: "All rules" }), h("a", { href: `#/rules/${id}`, text: "Edit the rule" })),
      ...rangeForm(`#/analytics/${id}`, r),
      h("p", { class: "muted period" }, `${d.since} – ${d.until} (UTC days). ${attributionText(d.attribution)}`));
    const uPlot = await charts().catch((e) => { page.append(note("error", e.message)); return null; });
    page.append(h("h2", { text: "Funnel" }), funnelFigure(uPlot, d, `Funnel of ${d.name}`),
      h("h2", { text: "Revenue over time" }), revenueFigure(uPlot, d),
      h("h2", { text: "Holdout lift" }), liftView(d.holdout),
      h("h2", { text: "Per step" }), stepTable(d.steps));
    return page;
  }

  function chartWidth() {
    return Math.max(260, Math.min($main().clientWidth - 40, 1100));
  }

  // A uPlot chart in `box`, kept as wide as its box (the box is measured once it is on the page).
  function plot(uPlot, opts, data, box) {
    if (!uPlot) return null;
    const chart = new uPlot({ ...opts, width: chartWidth() }, data, box);
    const seen = new ResizeObserver(() => {
      if (!box.isConnected) { seen.disconnect(); chart.destroy(); return; }
      const w = Math.max(240, Math.floor(box.clientWidth));
      if (w && Math.abs(w - chart.width) > 2) chart.setSize({ width: w, height: opts.height });
    });
    seen.observe(box);
    return chart;
  }

  function funnelFigure(uPlot, f, caption) {
    const stages = STAGES.map(([n, get, help]) => [n, Number(get(f)) || 0, help]);
    const box = h("div", { class: "plot", role: "img", "aria-label": `${caption}: ${stages.map(([n, v]) => `${n} ${v}`).join(", ")}` });
    const fig = h("figure", { class: "chart", "data-chart": "funnel" }, h("figcaption", { text: caption }), box,
      h("div", { class: "scroll" }, h("table", { class: "funnel" },
        h("thead", {}, h("tr", {}, ["Stage", "Count", "Of the step before", "What counts"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, stages.map(([n, v, help], i) => h("tr", { "data-stage": n },
          h("th", { scope: "row", text: n }), h("td", { "data-col": "count", text: v }),
          h("td", { text: i && stages[i - 1][1] ? `${((100 * v) / stages[i - 1][1]).toFixed(1)}%` : "" }), h("td", { class: "help", text: help })))))));
    const xs = stages.map((_, i) => i);
    const top = Math.max(1, ...stages.map(([, v]) => v));
    plot(uPlot, {
      height: 240, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false, ori: 1, dir: -1, range: [-0.5, stages.length - 0.5] }, y: { ori: 0, range: [0, top * 1.1] } },
      axes: [
        { side: 3, size: 86, gap: 4, grid: { show: false }, ticks: { show: false }, splits: () => xs, values: (u, sp) => sp.map((i) => (stages[i] ? stages[i][0] : "")) },
        { side: 0, values: (u, sp) => sp.map((v) => (Number.isInteger(v) ? String(v) : "")) },
      ],
      series: [{}, { label: "Count", fill: "#2f5ea8cc", stroke: "#2f5ea8", width: 1, points: { show: false }, paths: uPlot.paths.bars({ size: [0.7, 48] }) }],
    }, [xs, stages.map(([, v]) => v)], box);
    return fig;
  }

  function utcDays(since, until) {
    const out = [];
    for (let t = Date.parse(`${since}T00:00:00Z`), end = Date.parse(`${until}T00:00:00Z`); t <= end; t += 86400e3) out.push(new Date(t).toISOString().slice(0, 10));
    return out;
  }

  function revenueFigure(uPlot, d) {
    const currencies = [...new Set(d.daily.flatMap((x) => Object.keys(x.revenue)))].sort();
    if (!currencies.length) return h("p", { class: "muted", "data-chart": "revenue", text: "No revenue credited in this period." });
    const byDay = Object.fromEntries(d.daily.map((x) => [x.day, x]));
    const days = utcDays(d.since, d.until);
    const amount = (day, cur) => Number(((byDay[day] || {}).revenue || {})[cur] || 0);
    const box = h("div", { class: "plot", role: "img", "aria-label": `Revenue per day: ${currencies.map((c) => `${moneyList({ [c]: d.revenue[c] })} in all`).join(", ")}` });
    const active = days.filter((day) => byDay[day] && currencies.some((c) => amount(day, c) !== 0));
    const fig = h("figure", { class: "chart", "data-chart": "revenue" }, h("figcaption", { text: `Revenue per day, net of refunds (${currencies.join(", ")})` }), box,
      h("div", { class: "scroll" }, h("table", { class: "revenue" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Day" }), currencies.map((c) => h("th", { scope: "col", text: c })), h("th", { scope: "col", text: "Orders" }))),
        h("tbody", {}, active.map((day) => h("tr", { "data-day": day }, h("th", { scope: "row", text: day }),
          currencies.map((c) => h("td", { "data-currency": c, text: money(amount(day, c), c) })), h("td", { text: byDay[day].conversions })))))));
    const isoDay = (ts) => new Date(ts * 1e3).toISOString().slice(0, 10);
    plot(uPlot, {
      height: 260, legend: { show: currencies.length > 1 },
      scales: { x: { time: false, range: (u, lo, hi) => [lo - 43200, hi + 43200] } },  // UTC days, half a day either side
      axes: [{ incrs: [1, 2, 7, 14, 30, 91, 182, 365].map((n) => n * 86400), values: (u, sp) => sp.map((ts) => isoDay(ts).slice(5)) },
        { size: 70, values: (u, sp) => sp.map((v) => v.toLocaleString()) }],
      series: [{ label: "Day", value: (u, ts) => (ts === null ? "" : isoDay(ts)) },
        ...currencies.map((c, i) => ({ label: c, stroke: SERIES_COLOURS[i % SERIES_COLOURS.length], width: 2,
          fill: currencies.length === 1 ? "#2f5ea822" : undefined, points: { show: true, size: 6 },
          value: (u, v) => (v === null ? "" : money(v, c)) }))],
    }, [days.map((day) => Date.parse(`${day}T00:00:00Z`) / 1000), ...currencies.map((c) => days.map((day) => amount(day, c)))], box);
    return fig;
  }

  function liftView(hd) {
    const box = h("section", { class: "lift", "data-chart": "lift" });
    if (!hd) {
      box.append(h("p", { class: "muted", text: "Nobody was held out in this period: give the rule a holdout percentage to measure what it adds." }));
      return box;
    }
    box.append(h("p", { class: "muted", text: `${hd.percent}% held out as a control group; orders within ${hd.window_days} days count; revenue in ${hd.currency}.` }));
    if (!hd.conclusive) box.append(h("p", { class: "note warn sample", role: "status", text: `Sample too small — ${hd.note}` }));
    else box.append(note(hd.significant ? "ok" : "", hd.significant ? "The conversion lift is significant at 95%." : "No significant conversion lift at 95%."));
    const g = (x) => `${x.customers} customers, ${x.converted} converted (${(100 * x.conversion_rate).toFixed(1)}%), ${money(x.revenue_per_customer, hd.currency)} per customer`;
    box.append(h("dl", { class: "facts" }, h("dt", { text: "Treated" }), h("dd", { "data-group": "treated", text: g(hd.treated) }),
      h("dt", { text: "Control (held out)" }), h("dd", { "data-group": "control", text: g(hd.control) })));
    const pp = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(v * 100).toFixed(1)} pp`;
    const cash = (v) => `${v >= 0 ? "+" : "−"}${money(Math.abs(v), hd.currency)}`;
    for (const [label, i, fmt, key] of [["Conversion rate", hd.conversion_lift, pp, "conversion"],
      ["Revenue per customer", hd.revenue_per_customer_lift, cash, "revenue_per_customer"],
      ["Incremental revenue", hd.incremental_revenue, cash, "incremental_revenue"]]) {
      if (!i) continue;
      const text = `${label}: ${fmt(i.estimate)} (95% interval ${fmt(i.low)} to ${fmt(i.high)})`;
      box.append(h("figure", { class: "interval", "data-lift": key }, h("figcaption", { text }), intervalChart(i, text, fmt)));
    }
    if (!hd.conversion_lift) box.append(h("p", { class: "muted", text: "Too few customers in a group to compute an interval." }));
    return box;
  }

  // One estimate and its 95% interval on a line through zero ("no effect").
  function intervalChart(i, label, fmt) {
    const lo = Math.min(i.low, 0), hi = Math.max(i.high, 0), pad = (hi - lo || 1) * 0.12;
    const x = (v) => 10 + (380 * (v - (lo - pad))) / (hi - lo + 2 * pad);
    const tick = (v, anchor) => svg("text", { x: x(v), y: 46, "text-anchor": anchor, text: fmt(v) });
    return svg("svg", { viewBox: "0 0 400 52", class: "interval", role: "img", "aria-label": label },
      svg("line", { x1: x(0), x2: x(0), y1: 2, y2: 34, class: "zero" }),
      svg("line", { x1: x(i.low), x2: x(i.high), y1: 18, y2: 18, class: "range" }),
      svg("line", { x1: x(i.low), x2: x(i.low), y1: 11, y2: 25, class: "range" }),
      svg("line", { x1: x(i.high), x2: x(i.high), y1: 11, y2: 25, class: "range" }),
      svg("circle", { cx: x(i.estimate), cy: 18, r: 5, class: "estimate" }),
      Math.abs(x(0) - x(i.low)) > 40 ? svg("text", { x: x(0), y: 46, "text-anchor": "middle", text: "0" }) : null,
      tick(i.low, "middle"), tick(i.high, "middle"));
  }

  function stepTable(steps) {
    if (!steps.length) return h("p", { class: "muted", text: "No step ran in this period." });
    return h("div", { class: "scroll" }, h("table", { class: "steps" },
      h("thead", {}, h("tr", {}, ["Step", "Action", ...STAGES.map(([n]) => n), "Revenue"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, steps.map((st) => h("tr", { "data-step": st.step }, h("td", { text: st.step + 1 }), h("td", { text: st.action_type }),
        STAGES.map(([n, get]) => h("td", { "data-stage": n, text: get(st) })), h("td", { text: moneyList(st.revenue) }))))));
  }

  // ---- operations (operator) ---------------------------------------------------------------

  async function opsPage() {
    const q = query();
    const page = h("section", { "data-title": "Operations" }, h("h1", { text: "Operations" }));
    if (!me.operator) { page.append(note("error", "Operations need an operator token.")); return page; }
    const [lag, letters] = await Promise.all([lagSection(), dlqSection(q)]);
    page.append(lag, letters);
    return page;
  }

  async function lagSection() {
    const box = h("section", { class: "lag" }, h("h2", { text: "Consumer lag per role" }));
    const res = await api("GET", "/v1/ops/lag");
    if (!res.ok) { box.append(note("error", errorText(res))); return box; }
    box.append(h("p", { class: "muted", text: `Messages each role has still to read, as of ${fmtTime(res.data.read_at)}.` }),
      h("div", { class: "scroll" }, h("table", { class: "lag" },
        h("thead", {}, h("tr", {}, ["Role", "Consumer group", "Lag", "Partitions"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, res.data.roles.map((r) => h("tr", { "data-role": r.role },
          h("th", { scope: "row", text: r.role }), h("td", { text: r.group }), h("td", { "data-col": "lag", text: r.lag }),
          h("td", {}, r.partitions.length ? h("details", {}, h("summary", { text: `${r.partitions.length} partition${r.partitions.length === 1 ? "" : "s"}` }),
            h("table", { class: "partitions" }, h("thead", {}, h("tr", {}, ["Topic", "Partition", "Committed", "End", "Lag"].map((t) => h("th", { scope: "col", text: t })))),
              h("tbody", {}, r.partitions.map((p) => h("tr", {}, h("td", { text: p.topic }), h("td", { text: p.partition }),
                h("td", { text: p.committed ?? "—" }), h("td", { text: p.end }), h("td", { text: p.lag })))))) : h("span", { class: "muted", text: "no topics yet" }))))))));
    return box;
  }

  // ---- dead letters (operator) -------------------------------------------------------------

  async function dlqSection(q) {
    const params = new URLSearchParams();
    const store = q.store === undefined ? me.store_id : q.store;
    if (store) params.set("store", store);
    for (const k of ["stage", "reason"]) if (q[k]) params.set(k, q[k]);
    const res = await api("GET", `/v1/dlq?${params}`);
    const page = h("section", { class: "dead-letters" }, h("h2", { text: "Dead letters" }), dlqFilter(q, store));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const letters = res.data.letters;
    page.append(letters.length ? h("div", { class: "scroll" }, h("table", { class: "dlq" },
      h("thead", {}, h("tr", {}, ["Failed", "Stage", "Reason", "Store", "Source", "Error", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, letters.map((l) => h("tr", { "data-dlq": l.dlq_id },
        h("td", {}, h("a", { href: `#/dlq/${l.partition}/${l.offset}`, text: fmtTime(l.failed_at) })),
        h("td", { text: l.stage }), h("td", { text: l.reason }), h("td", { text: l.store_id || "" }),
        h("td", { text: `${l.source_topic} ${l.source_partition}:${l.source_offset}` }), h("td", { class: "msg", text: l.error }),
        h("td", {}, redriveControl(l))))))) : h("p", { class: "muted", text: "No dead letters match." }));
    return page;
  }

  function dlqFilter(q, store) {
    const s = h("input", { type: "text", name: "store", value: store || "" });
    const stage = h("select", { name: "stage", value: q.stage || "" }, ["", "bridge", "rules", "workers", "sink", "scheduler"].map((x) => h("option", { value: x, text: x || "any stage" })));
    const reason = h("input", { type: "text", name: "reason", value: q.reason || "" });
    const form = h("form", { class: "filters", role: "search" }, field("Store (empty: all)", s), field("Stage", stage), field("Reason", reason), h("button", { type: "submit", text: "Filter" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = `#/ops?${new URLSearchParams({ store: s.value.trim(), stage: stage.value, reason: reason.value.trim() })}`;
    });
    return form;
  }

  function redriveControl(l) {
    const box = h("span", { class: "redrive" });
    if (l.redriven_at) { box.append(h("span", { class: "status succeeded", text: `redriven ${fmtTime(l.redriven_at)}` })); return box; }
    const btn = h("button", { type: "button", text: "Redrive", "aria-label": `Redrive ${l.dlq_id}` });
    btn.addEventListener("click", async () => {
      if (btn.disabled) return;
      btn.disabled = true;  // a second click of a double click lands on a disabled button
      btn.textContent = "Redriving…";
      const res = await api("POST", `/v1/dlq/${l.partition}/${l.offset}/redrive`);
      if (!res.ok) { btn.disabled = false; btn.textContent = "Redrive"; box.append(note("error", errorText(res))); return; }
      setKids(box, h("span", { class: "status succeeded", role: "status",
        text: res.data.redriven ? `redriven ${fmtTime(res.data.letter.redriven_at)}` : `already redriven ${fmtTime(res.data.letter.redriven_at)}` }));
    });
    box.append(btn);
    return box;
  }

  async function letterPage(partition, offset) {
    const res = await api("GET", `/v1/dlq/${partition}/${offset}`);
    const page = h("section", { "data-title": "Dead letter" }, h("h1", { text: "Dead letter" }));
    if (!res.ok) { page.append(note("error", errorText(res))); return page; }
    const l = res.data;
    const rows = [["Id", l.dlq_id], ["Stage", l.stage], ["Reason", l.reason], ["Store", l.store_id || ""], ["Failed", fmtTime(l.failed_at)],
      ["Attempts", l.attempts], ["Source", `${l.source_topic} ${l.source_partition}:${l.source_offset}`], ["Error", l.error]];
    page.append(h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])), redriveControl(l),
      h("h2", { text: "Message" }), typeof l.message === "string" ? h("pre", { class: "json", text: l.message }) : pretty(l.message));
    return page;
  }

  // ---- start -------------------------------------------------------------------------------

  document.getElementById("signout").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  route();
})();
