// The wooflow console: a single page over the admin API (/v1). Served as written — no build
// step, no dependencies. Every value from the API reaches the page as text (h() appends
// strings as text nodes, never as markup); the token lives in this tab's sessionStorage and
// travels only in the Authorization header.
"use strict";

(() => {
  const KEY = "wooflow.console";
  const PAGE = 50;
  const $main = () => document.getElementById("main");
  let session = readSession();
  let me = session ? session.me || null : null;  // who the token is, kept from sign-in (a 401 signs out)
  let schemaCache = null;
  let renderSeq = 0;
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

  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;

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
    logCursors.stack = [];
    frame();
    location.hash = "#/signin";
    if (message) sessionStorage.setItem(`${KEY}.flash`, message);
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
    const flash = sessionStorage.getItem(`${KEY}.flash`);
    sessionStorage.removeItem(`${KEY}.flash`);
    const form = h("form", { class: "signin", novalidate: true },
      h("h1", { text: "Sign in" }),
      flash ? note("error", flash) : null,
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
    ["letter", /^#\/dlq\/(\d+)\/(\d+)$/, (m) => letterPage(Number(m[1]), Number(m[2]))],
    ["dlq", /^#\/dlq$/, () => dlqPage()],
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
    const section = path.split("/")[1];
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
    // → "actions[0].params.x" → ...), so an error inside a JSON-valued input lands on it.
    let p = path;
    while (p) {
      const el = form.querySelector(`[data-path="${CSS.escape(p)}"]`);
      if (el) return el;
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
      const input = inputFor(form, e.field || "");
      if (!input) { unplaced.push(e); continue; }
      const id = nextId("err");
      const msg = h("p", { class: "field-error", id, "data-error-for": e.field, text: e.message });
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
      "group_label", "frequency", "exit_conditions"];
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
    frequency: { once_per_customer: false, per_days: null }, exit_conditions: [] });

  async function editorPage(id) {
    const sch = await schema();
    let rule = BLANK();
    let history = [];
    if (id !== null) {
      const [res, hist] = await Promise.all([api("GET", `/v1/rules/${id}`), api("GET", `/v1/rules/${id}/history`)]);
      if (!res.ok) return h("section", { "data-title": "Rule" }, h("h1", { text: "Rule" }), note("error", errorText(res)));
      rule = { ...BLANK(), ...specOf(res.data) };
      rule.version = res.data.version;
      history = hist.ok ? hist.data.entries : [];
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
    const drawSteps = () => setKids(steps, h("legend", { text: "Steps" }),
      rule.actions.map((a, i) => stepEl(rule, i, sch, drawSteps)),
      h("button", { type: "button", text: "Add step", onclick: () => { rule.actions.push({ type: "add_order_note", params: {}, delay: "day 1" }); drawSteps(); } }));
    drawSteps();
    const freq = rule.frequency || (rule.frequency = {});
    const limits = h("fieldset", {}, h("legend", { text: "Frequency and exits" }),
      checkbox("At most once per customer, ever", !!freq.once_per_customer, "frequency.once_per_customer", (v) => { freq.once_per_customer = v; }),
      field("At most once per customer every N days", bind(h("input", { type: "number", min: 1, value: freq.per_days ?? "", "data-path": "frequency.per_days" }),
        (v) => { freq.per_days = v === "" ? null : Number(v); })),
      jsonInput("Exit conditions (JSON)", rule.exit_conditions || [], "exit_conditions", (v) => { rule.exit_conditions = v; },
        'e.g. [{"type": "ordered"}] — checked before each delayed step'));
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
    const area = h("textarea", { rows: 3, "data-path": path, value: JSON.stringify(value, null, 1) });
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
        spec.operators.map((o) => h("option", { value: o, text: o })));
      osel.addEventListener("change", () => { c.operator = osel.value; draw(); });
      setKids(row, fsel, osel, valueInput(c, spec, path),
        h("button", { type: "button", class: "small", text: "Remove", "aria-label": `Remove condition on ${c.field}`, onclick: remove }));
    };
    draw();
    return row;
  }

  function valueInput(c, spec, path) {
    const list = LIST_OPS.has(c.operator);
    const attrs = { "data-path": `${path}.value`, "aria-label": "Value" };
    const num = (s) => (spec.type === "number" && s !== "" && !isNaN(Number(s)) ? Number(s) : s);
    if (spec.values && !list) {
      const sel = h("select", { ...attrs, value: c.value ?? "" }, h("option", { value: "", text: "choose…" }), spec.values.map((v) => h("option", { value: v, text: v })));
      sel.addEventListener("change", () => { c.value = sel.value; });
      return sel;
    }
    if (spec.values && list) {
      const chosen = new Set(Array.isArray(c.value) ? c.value : []);
      const sel = h("select", { ...attrs, multiple: true }, spec.values.map((v) => h("option", { value: v, text: v, selected: chosen.has(v) })));
      sel.addEventListener("change", () => { c.value = [...sel.selectedOptions].map((o) => o.value); });
      return sel;
    }
    if (list) {
      const input = h("input", { ...attrs, type: "text", placeholder: "comma-separated", value: Array.isArray(c.value) ? c.value.join(", ") : (c.value ?? "") });
      input.addEventListener("input", () => { c.value = input.value.split(",").map((s) => s.trim()).filter(Boolean).map(num); });
      return input;
    }
    const type = spec.type === "number" ? "number" : spec.type === "date" ? "date" : "text";
    const input = h("input", { ...attrs, type, step: type === "number" ? "any" : null, value: c.value ?? "" });
    input.addEventListener("input", () => { c.value = num(input.value); });
    return input;
  }

  // ---- steps -------------------------------------------------------------------------------

  function stepEl(rule, i, sch, redraw) {
    const a = rule.actions[i];
    a.params = a.params || {};
    const spec = sch.actions.find((x) => x.name === a.type);
    const type = h("select", { "data-path": `actions[${i}].type`, value: a.type }, sch.actions.map((x) => h("option", { value: x.name, text: x.name })));
    type.addEventListener("change", () => { a.type = type.value; a.params = {}; redraw(); });
    const delay = bind(h("input", { type: "text", "data-path": `actions[${i}].delay`, placeholder: "immediately", value: a.delay || "" }),
      (v) => { a.delay = v.trim() === "" ? null : v; });
    const move = (to) => { const [x] = rule.actions.splice(i, 1); rule.actions.splice(to, 0, x); redraw(); };
    return h("fieldset", { class: "step", "data-step": i }, h("legend", { text: `Step ${i + 1}` }),
      field("Action", type, spec ? spec.description : ""),
      field("Delay", delay, "immediately, 30m, hour 24, day 3, week 1 — from the trigger"),
      spec ? schemaForm(spec.params, a.params, `actions[${i}].params`, sch) : null,
      h("div", { class: "inline" },
        i > 0 ? h("button", { type: "button", class: "small", text: "Move up", onclick: () => move(i - 1) }) : null,
        i < rule.actions.length - 1 ? h("button", { type: "button", class: "small", text: "Move down", onclick: () => move(i + 1) }) : null,
        rule.actions.length > 1 ? h("button", { type: "button", class: "small", text: "Remove step", onclick: () => { rule.actions.splice(i, 1); redraw(); } }) : null));
  }

  function historyList(entries) {
    return h("section", { class: "history" }, h("h2", { text: "Versions and history" }),
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
    const ruleSel = h("input", { type: "number", min: 1, "data-path": "rule", list: "dry-rules", value: q.rule || (rules[0] ? rules[0].id : "") });
    const kind = h("select", { "data-path": "kind", value: q.customer ? "customer_id" : "order_id" },
      h("option", { value: "order_id", text: "Order" }), h("option", { value: "customer_id", text: "Customer" }));
    const subject = h("input", { type: "number", min: 1, "data-path": "subject", value: q.order || q.customer || "" });
    const out = h("div", { class: "dry-result", "aria-live": "polite" });
    const run = h("button", { type: "submit", class: "primary", text: "Run dry run" });
    const form = h("form", { class: "filters", novalidate: true },
      h("datalist", { id: "dry-rules" }, rules.map((r) => h("option", { value: r.id, text: r.name }))),
      field("Rule id", ruleSel), field("On a", kind), field("Order or customer id", subject), run);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      if (!ruleSel.value || !subject.value) {
        showErrors(form, [!ruleSel.value ? { field: "rule", message: "choose a rule" } : { field: "subject", message: "give the order or customer id" }]);
        return;
      }
      run.disabled = true;
      setKids(out, h("p", { class: "muted", text: "Running…" }));
      const r = await api("POST", `/v1/rules/${Number(ruleSel.value)}/dry-run`, { [kind.value]: Number(subject.value) });
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
    return page;
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

  // Each section draws one view of the store's numbers; more views (funnels, revenue, lift)
  // are one more entry here.
  const ANALYTICS = [outcomesSection];
  const OUTCOME_ORDER = ["succeeded", "skipped", "failed", "dead_lettered", "exited"];

  async function analyticsPage() {
    const q = query();
    const days = Math.max(1, Math.min(3650, Number(q.days || 30)));
    const sel = h("select", { name: "days", value: String(days) }, [1, 7, 30, 90, 365].map((d) => h("option", { value: String(d), text: `last ${d} day${d > 1 ? "s" : ""}` })));
    sel.addEventListener("change", () => { location.hash = hashWith("#/analytics", { days: sel.value }); });
    const page = h("section", { "data-title": "Analytics" }, h("h1", { text: "Analytics" }), h("form", { class: "filters" }, field("Period", sel)));
    for (const section of ANALYTICS) page.append(await section(days));
    return page;
  }

  async function outcomesSection(days) {
    const since = new Date(Date.now() - days * 86400e3).toISOString();
    const res = await api("GET", `/v1/logs/summary?since=${encodeURIComponent(since)}`);
    const box = h("section", { class: "analytics" }, h("h2", { text: "Sends and outcomes per rule" }));
    if (!res.ok) { box.append(note("error", errorText(res))); return box; }
    const rules = res.data.rules;
    if (!rules.length) { box.append(h("p", { class: "muted", text: "No executions in this period." })); return box; }
    const max = Math.max(...rules.map((r) => r.total));
    const statuses = [...new Set([...OUTCOME_ORDER, ...rules.flatMap((r) => Object.keys(r.outcomes))])].filter((s) => rules.some((r) => r.outcomes[s]));
    box.append(h("ul", { class: "legend" }, statuses.map((s) => h("li", {}, h("span", { class: `swatch status-bg ${s}` }), s))));
    box.append(h("div", { class: "scroll" }, h("table", { class: "outcomes" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Rule" }), h("th", { scope: "col", text: "Total" }), statuses.map((s) => h("th", { scope: "col", text: s })), h("th", { scope: "col", text: "Share" }))),
      h("tbody", {}, rules.map((r) => h("tr", { "data-rule": r.rule_id },
        h("td", {}, h("a", { href: hashWith("#/logs", { rule_id: r.rule_id }), text: r.rule_name || `rule ${r.rule_id} (deleted)` })),
        h("td", { text: r.total }), statuses.map((s) => h("td", { text: r.outcomes[s] || 0 })),
        h("td", {}, bar(r, statuses, max))))))));
    return box;
  }

  function bar(r, statuses, max) {
    const outer = h("div", { class: "bar", role: "img", "aria-label": statuses.map((s) => `${s} ${r.outcomes[s] || 0}`).join(", ") });
    outer.style.width = `${Math.max(2, (100 * r.total) / max)}%`;
    for (const s of statuses) {
      if (!r.outcomes[s]) continue;
      const seg = h("span", { class: `status-bg ${s}` });
      seg.style.width = `${(100 * r.outcomes[s]) / r.total}%`;
      outer.append(seg);
    }
    return outer;
  }

  // ---- dead letters (operator) -------------------------------------------------------------

  async function dlqPage() {
    const q = query();
    const params = new URLSearchParams();
    const store = q.store === undefined ? me.store_id : q.store;
    if (store) params.set("store", store);
    for (const k of ["stage", "reason"]) if (q[k]) params.set(k, q[k]);
    const res = await api("GET", `/v1/dlq?${params}`);
    const page = h("section", { "data-title": "Dead letters" }, h("h1", { text: "Dead letters" }), dlqFilter(q, store));
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
      location.hash = `#/dlq?${new URLSearchParams({ store: s.value.trim(), stage: stage.value, reason: reason.value.trim() })}`;
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
