// queue-manager's operations console: plain JavaScript, no build step, no dependency.
// Every request carries the key the operator typed (Authorization: Bearer), never a cookie.
"use strict";

const KEY_STORAGE = "qm-console-key";
const POLL_MS = 2000;

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  session: null,
  types: [],
  view: "overview",
  pollTimer: null,
  deadLetters: { type: "", items: [], matchedIds: [], selected: new Set(), query: null },
  schemas: {},
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- numbers with units ----
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function count(n, unit = "msg") {
  return n === null || n === undefined ? "–" : `${integer.format(n)} ${unit}`;
}
function rate(n) {
  return n === null || n === undefined ? "–" : `${decimal.format(n)} msg/s`;
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${decimal.format(seconds)} s`;
  if (seconds < 3600) return `${decimal.format(seconds / 60)} min`;
  if (seconds < 86400) return `${decimal.format(seconds / 3600)} h`;
  return `${decimal.format(seconds / 86400)} d`;
}

// ---- the API ----
class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (raw) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (response.status === 401) {
    showLogin(state.key ? "That key was not accepted; type another." : "");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function toast(text, kind = "info") {
  const node = $("#toast");
  node.textContent = text;
  node.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.className = ""; }, 6000);
}

// ---- the key ----
function showLogin(message = "") {
  stopPolling();
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#api-key").focus();
}

async function startSession() {
  try {
    state.session = await api("/console/session");
  } catch (error) {
    if (error.status !== 401) toast(`The API did not answer: ${error.message}`, "error");
    return;
  }
  $("#login").hidden = true;
  const who = $("#who");
  who.replaceChildren();
  if (state.session.auth_required) {
    who.append(
      el("span", {}, `${state.session.name} · ${state.session.role}`),
      el("button", { type: "button", class: "link", onclick: forgetKey }, "Forget key"),
    );
  } else {
    who.append(el("span", { class: "muted" }, "no API keys configured"));
  }
  document.body.classList.toggle("read-only", !state.session.may_change);
  for (const node of document.querySelectorAll("[data-change]")) node.hidden = !state.session.may_change;
  $("#send-panel").hidden = !state.session.may_change;
  const schemas = await api("/schemas");
  state.types = schemas.types.map((t) => t.type);
  fillTypeSelect($("#dl-type"), state.types);
  fillTypeSelect($("#send-type"), state.types);
  route();
}

function forgetKey() {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  $("#who").replaceChildren();
  showLogin();
}

function fillTypeSelect(select, types) {
  const current = select.value;
  select.replaceChildren(...types.map((t) => el("option", { value: t }, t)));
  if (types.includes(current)) select.value = current;
}

// ---- routing: #/overview, #/dead-letters[/type], #/messages[/id] ----
function route() {
  if (!state.session) return;
  const [, view = "overview", arg = ""] = location.hash.split("/");
  state.view = ["overview", "dead-letters", "messages"].includes(view) ? view : "overview";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${state.view}`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === state.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  stopPolling();
  if (state.view === "overview") pollOverview();
  if (state.view === "dead-letters") {
    const type = decodeURIComponent(arg);
    if (type && state.types.includes(type)) $("#dl-type").value = type;
    loadDeadLetters();
  }
  if (state.view === "messages") {
    if (arg) { $("#lookup-id").value = decodeURIComponent(arg); lookUp(); }
    if (!state.schemas[$("#send-type").value]) buildSendForm();
  }
}

function stopPolling() {
  state.pollGeneration = (state.pollGeneration || 0) + 1;
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

// ---- overview ----
// A long poll: the server answers as soon as it has a sample newer than the one shown.
async function pollOverview() {
  stopPolling();
  const generation = (state.pollGeneration = (state.pollGeneration || 0) + 1);
  const after = state.sampledAt ? `?after=${state.sampledAt}` : "";
  try {
    const data = await api(`/console/overview${after}`);
    if (generation !== state.pollGeneration || state.view !== "overview") return;
    state.sampledAt = data.sampled_at;
    renderOverview(data);
    $("#overview-error").hidden = true;
  } catch (error) {
    if (error.status === 401) return;
    $("#overview-error").hidden = false;
    $("#overview-error").textContent = `Could not read the overview: ${error.message}`;
    if (state.view === "overview" && !document.hidden) state.pollTimer = setTimeout(pollOverview, POLL_MS);
    return;
  }
  if (state.view === "overview" && !document.hidden) state.pollTimer = setTimeout(pollOverview, 50);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.view === "overview" && state.session) pollOverview();
});

function renderOverview(data) {
  const body = $("#overview-table tbody");
  const rows = [];
  let everythingEmpty = true;
  for (const t of data.types) {
    const c = t.counts || {};
    const d = t.dead_letter_counts || {};
    const total = (c.visible || 0) + (c.in_flight || 0) + (c.delayed || 0) + (d.visible || 0) + (d.in_flight || 0);
    if (total > 0) everythingEmpty = false;
    const deadLetters = d.visible || 0;
    rows.push(
      el("tr", { "data-type": t.type },
        el("th", { scope: "row", "data-label": "Type" },
          el("span", { class: "type" }, t.type), t.fifo ? el("span", { class: "badge" }, "FIFO") : null,
          el("div", { class: "muted small" }, t.queue)),
        el("td", { "data-label": "Visible", "data-field": "visible" }, count(c.visible)),
        el("td", { "data-label": "In flight", "data-field": "in_flight" }, count(c.in_flight)),
        el("td", { "data-label": "Delayed", "data-field": "delayed" }, count(c.delayed)),
        el("td", { "data-label": "In" }, rate(t.in_per_second)),
        el("td", { "data-label": "Out" }, rate(t.out_per_second)),
        el("td", { "data-label": "Oldest wait" }, duration(t.oldest_wait_seconds)),
        el("td", { "data-label": "Dead letters", "data-field": "dead_letter_visible" },
          el("a", { href: `#/dead-letters/${encodeURIComponent(t.type)}`, class: deadLetters ? "alert" : "",
                    "aria-label": `${count(deadLetters)} dead letters of ${t.type} (${t.dead_letter_queue})` },
            count(deadLetters))),
        el("td", { "data-label": "Last 15 min" }, sparkline(t.history, data.window_seconds, data.sampled_at)),
      ),
    );
  }
  body.replaceChildren(...rows);
  $("#overview-empty").hidden = !everythingEmpty;
  if (everythingEmpty) {
    $("#first-curl").textContent =
      `curl -X POST ${location.origin}/messages \\\n  -H 'Content-Type: application/json'` +
      (state.session && state.session.auth_required ? " \\\n  -H 'Authorization: Bearer <key>'" : "") +
      ` \\\n  -d '{"type": "log", "payload": {"message": "hello"}}'`;
  }
  const at = data.sampled_at ? new Date(data.sampled_at * 1000) : null;
  $("#overview-updated").textContent = at
    ? `Updated ${at.toLocaleTimeString()} · every ${decimal.format(data.interval_seconds)} s`
    : "Waiting for the first sample…";
  if (data.error) {
    $("#overview-error").hidden = false;
    $("#overview-error").textContent = data.error;
  }
}

function sparkline(history, windowSeconds, now) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 160, height = 36;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  // The chart spans the history there is, up to the window (at least a minute), so a fresh one is readable.
  const end = now || Date.now() / 1000;
  const kept = history.filter((p) => p[0] >= end - windowSeconds);
  const spanSeconds = Math.min(windowSeconds, Math.max(60, kept.length ? end - kept[0][0] : 0));
  const start = end - spanSeconds;
  const points = kept;
  const peak = Math.max(1, ...points.map((p) => p[1] + p[2] + p[3]), ...points.map((p) => p[4]));
  svg.setAttribute("aria-label", points.length
    ? `Queued messages over the last ${duration(spanSeconds)}, at most ${integer.format(peak)}`
    : "No samples yet");
  const base = document.createElementNS(NS, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: width, y1: height - 1, y2: height - 1, class: "axis" })) base.setAttribute(k, v);
  svg.append(base);
  const x = (t) => ((t - start) / spanSeconds) * width;
  const y = (v) => height - 2 - (v / peak) * (height - 4);
  const line = (values, cls) => {
    if (!points.length) return;
    const path = document.createElementNS(NS, "polyline");
    path.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(values(p)).toFixed(1)}`).join(" "));
    path.setAttribute("class", cls);
    svg.append(path);
  };
  line((p) => p[1] + p[2] + p[3], "queued");
  line((p) => p[4], "dead");
  return svg;
}

// ---- dead letters ----
function deadLetterQuery(limit) {
  const params = new URLSearchParams({ limit: String(limit), scan: "1000", payload: "true" });
  const error = $("#dl-error").value.trim();
  const id = $("#dl-id").value.trim();
  const older = $("#dl-older").value;
  const newer = $("#dl-newer").value;
  if (error) params.set("error", error);
  if (id) params.set("id", id);
  if (older !== "") params.set("older_than_seconds", String(Math.round(Number(older) * 60)));
  if (newer !== "") params.set("newer_than_seconds", String(Math.round(Number(newer) * 60)));
  return `/queues/${encodeURIComponent($("#dl-type").value)}/dead-letters?${params}`;
}

async function loadDeadLetters() {
  const dl = state.deadLetters;
  dl.type = $("#dl-type").value;
  $("#dl-summary").textContent = "Loading…";
  try {
    const data = await api(deadLetterQuery(200));
    dl.items = data.messages.sort((a, b) => (b.sent_timestamp_ms || 0) - (a.sent_timestamp_ms || 0)); // newest first
    dl.matchedIds = data.matched_ids;
    dl.selected.clear();
    renderDeadLetters(data);
  } catch (error) {
    if (error.status !== 401) $("#dl-summary").textContent = `Could not read the dead letters: ${error.message}`;
  }
}

function renderDeadLetters(data) {
  const dl = state.deadLetters;
  const now = Date.now();
  const rows = dl.items.map((item) => {
    const id = item.id || item.sqs_message_id;
    const box = el("input", { type: "checkbox", "aria-label": `Select ${id}` });
    box.addEventListener("change", () => { if (box.checked) dl.selected.add(id); else dl.selected.delete(id); syncSelection(); });
    const age = item.sent_timestamp_ms ? (now - item.sent_timestamp_ms) / 1000 : null;
    return el("tr", { "data-id": id },
      el("td", { "data-label": "Select" }, box),
      el("td", { "data-label": "Id", class: "mono" }, id),
      el("td", { "data-label": "Last error", class: "error-text" }, item.error || "–"),
      el("td", { "data-label": "Attempts" }, item.receive_count === null ? "–" : integer.format(item.receive_count)),
      el("td", { "data-label": "Age" }, duration(age)),
      el("td", { "data-label": "Trace", class: "mono" }, item.trace_id || "–"),
      el("td", {}, el("button", { type: "button", class: "link", "aria-label": `Open ${id}`, onclick: () => openDeadLetter(item) }, "Open")),
    );
  });
  $("#dl-table tbody").replaceChildren(...rows);
  $("#dl-all").checked = false;
  const filtered = $("#dl-error").value || $("#dl-id").value || $("#dl-older").value || $("#dl-newer").value;
  $("#dl-summary").textContent =
    `${integer.format(data.matched)} ${filtered ? "matching" : ""} dead letter${data.matched === 1 ? "" : "s"} of ` +
    `${data.type} on ${data.queue} (looked at ${integer.format(data.scanned)})` +
    (data.matched > dl.items.length ? `; showing the newest ${dl.items.length}` : "") +
    (data.scanned >= 1000 ? ". More may wait: an action takes these 1,000 at most; repeat it for the rest" : "");
  const empty = $("#dl-empty");
  empty.hidden = data.matched > 0;
  empty.textContent = filtered
    ? "Nothing matches this filter. Clear a field to see more."
    : `No dead letters for ${data.type}. Messages land here when they fail more than their retries allow, or raise PermanentFailure.`;
  $("#dl-table").hidden = data.matched === 0;
  $("#dl-redrive-matching").textContent = `Redrive all matching (${integer.format(data.matched)})`;
  $("#dl-delete-matching").textContent = `Delete all matching (${integer.format(data.matched)})`;
  for (const id of ["#dl-redrive-matching", "#dl-delete-matching", "#dl-export"]) $(id).disabled = data.matched === 0;
  syncSelection();
}

function syncSelection() {
  const n = state.deadLetters.selected.size;
  $("#dl-redrive-selected").disabled = n === 0;
  $("#dl-delete-selected").disabled = n === 0;
  $("#dl-redrive-selected").textContent = n ? `Redrive selected (${n})` : "Redrive selected";
  $("#dl-delete-selected").textContent = n ? `Delete selected (${n})` : "Delete selected";
}

function openDeadLetter(item) {
  const id = item.id || item.sqs_message_id;
  const fields = [
    ["Id", id], ["SQS message id", item.sqs_message_id], ["Type", item.type], ["Source queue", item.source_queue],
    ["Last error", item.error], ["Attempts (receives before dead-lettering)", item.receive_count],
    ["Receive count on the dead-letter queue", item.dead_letter_receive_count],
    ["Sent", item.sent_at], ["Trace id", item.trace_id],
  ];
  $("#dl-detail-fields").replaceChildren(
    ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v === null || v === undefined ? "–" : String(v))]),
  );
  $("#dl-detail-payload").textContent = JSON.stringify(item.payload, null, 2);
  const detail = $("#dl-detail");
  detail.dataset.id = id;
  detail.hidden = false;
  detail.focus();
}

function confirmAction(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); resolve(answer); };
    $("#confirm-ok").onclick = done(true);
    $("#confirm-cancel").onclick = done(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

// The dry run: the ids are read again just before asking, and exactly those are acted on.
async function actOn(action, ids, { matching = false } = {}) {
  const type = state.deadLetters.type;
  let chosen = ids;
  if (matching) {
    const fresh = await api(deadLetterQuery(1));
    chosen = fresh.matched_ids;
  }
  if (!chosen.length) { toast("Nothing to do: no dead letter matches now."); return; }
  const verb = action === "redrive" ? "Redrive" : "Delete for good";
  const where = action === "redrive" ? `back to the ${type} queue` : `from the ${type} dead-letter queue`;
  $("#confirm-ok").textContent = `${action === "redrive" ? "Redrive" : "Delete"} ${integer.format(chosen.length)}`;
  const ok = await confirmAction(
    `${verb} ${integer.format(chosen.length)} dead letter${chosen.length === 1 ? "" : "s"} ${where}?` +
    (matching ? " (Dry run: that many match the filter now.)" : ""));
  if (!ok) return;
  const path = action === "redrive"
    ? `/queues/${encodeURIComponent(type)}/redrive`
    : `/queues/${encodeURIComponent(type)}/dead-letters/delete`;
  try {
    const result = await api(path, { method: "POST", body: { ids: chosen } });
    const done = action === "redrive" ? result.moved : result.deleted;
    const missing = result.not_found.length ? `, ${result.not_found.length} no longer there` : "";
    const failed = result.failed.length ? `, ${result.failed.length} failed` : "";
    toast(`${action === "redrive" ? "Redrove" : "Deleted"} ${integer.format(done)}${missing}${failed}.`,
      result.failed.length ? "error" : "ok");
  } catch (error) {
    toast(`${verb} refused: ${error.message}`, "error");
  }
  $("#dl-detail").hidden = true;
  loadDeadLetters();
}

async function exportMatching() {
  const data = await api(deadLetterQuery(1000));
  const blob = new Blob([JSON.stringify(data.messages, null, 2)], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `dead-letters-${data.type}-${Date.now()}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  toast(`Exported ${integer.format(data.messages.length)} dead letters.`, "ok");
}

// ---- messages: look-up ----
async function lookUp() {
  const id = $("#lookup-id").value.trim();
  const out = $("#lookup-result");
  if (!id) return;
  out.replaceChildren(el("p", { class: "muted" }, "Looking up…"));
  const response = await api(`/messages/${encodeURIComponent(id)}`, { raw: true });
  if (response.status === 401) { showLogin("That key was not accepted; type another."); return; }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 404) {
    out.replaceChildren(el("p", { class: "empty", "data-status": "404" },
      `No message with id ${id} is known here.`));
    return;
  }
  if (response.status === 410) {
    out.replaceChildren(el("p", { class: "empty", "data-status": "410" },
      `Message ${id} is known, but its status has expired.`));
    return;
  }
  if (!response.ok) {
    out.replaceChildren(el("p", { class: "error" }, `Could not look it up: ${(data && data.detail) || response.status}`));
    return;
  }
  const { events = [], ...fields } = data;
  out.replaceChildren(
    el("dl", { class: "fields", "data-status": "200" },
      ...Object.entries(fields).flatMap(([k, v]) => [
        el("dt", {}, k.replaceAll("_", " ")),
        el("dd", { class: "mono" }, v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v)),
      ])),
    events.length ? el("h3", {}, "History") : null,
    events.length ? el("ol", { class: "events" }, ...events.map((e) => {
      const { kind, at, attempt, ...rest } = e;
      const more = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "";
      return el("li", {}, el("strong", {}, kind), ` ${at || ""}`, attempt ? ` · attempt ${attempt}` : "", more);
    })) : null,
  );
}

// ---- messages: the send form, built from the type's JSON Schema ----
async function buildSendForm() {
  const type = $("#send-type").value;
  if (!type) return;
  const schema = state.schemas[type] || (state.schemas[type] = await api(`/schemas/${encodeURIComponent(type)}`));
  $("#send-description").textContent = schema.description || "";
  const fields = $("#send-fields");
  fields.replaceChildren(el("legend", {}, "Payload"));
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  if (!Object.keys(properties).length) {
    fields.append(field("payload", "/payload", { description: "The payload, as JSON." }, true, "json"));
  }
  for (const [name, spec] of Object.entries(properties)) {
    fields.append(field(name, `/payload/${name}`, spec, required.has(name), kindOf(spec)));
  }
  const envelope = $("#send-envelope");
  envelope.replaceChildren(el("legend", {}, "Delivery"));
  if (schema["x-qm-queue"] === "fifo") {
    envelope.append(field("group_id", "/group_id", { description: "The FIFO group: its messages run one at a time, in order." }, true, "string"));
    envelope.append(field("deduplication_id", "/deduplication_id", { description: "Optional; defaults to the message id." }, false, "string"));
  } else {
    envelope.append(field("delay_seconds", "/delay_seconds", { description: "Seconds before it may run (0–900).", type: "integer" }, false, "number"));
  }
  envelope.append(field("idempotency_key", "/idempotency_key", { description: "A retry with the same key gets the first answer." }, false, "string"));
  clearErrors();
  $("#send-result").replaceChildren();
}

function kindOf(spec) {
  if (Array.isArray(spec.enum)) return "enum";
  if (spec.type === "string") return "string";
  if (spec.type === "integer" || spec.type === "number") return "number";
  if (spec.type === "boolean") return "boolean";
  return "json";
}

function field(name, path, spec, isRequired, kind) {
  const id = `f${path.replaceAll("/", "-")}`;
  let input;
  if (kind === "enum") {
    input = el("select", { id, name }, isRequired ? null : el("option", { value: "" }, "(none)"),
      ...spec.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
  } else if (kind === "boolean") {
    input = el("input", { id, name, type: "checkbox" });
  } else if (kind === "json") {
    input = el("textarea", { id, name, rows: 4, spellcheck: "false", placeholder: "JSON, e.g. {\"order\": 7}" });
  } else {
    input = el("input", { id, name, type: kind === "number" ? "number" : "text", autocomplete: "off",
      inputmode: kind === "number" ? "numeric" : null });
  }
  input.dataset.kind = kind;
  input.dataset.path = path;
  const errorId = `${id}-error`;
  input.setAttribute("aria-describedby", errorId);
  input.addEventListener("input", scheduleCheck);
  return el("div", { class: "field", "data-path": path },
    el("label", { for: id }, name, isRequired ? el("span", { class: "required", "aria-label": "required" }, " *") : null),
    input,
    spec.description ? el("p", { class: "muted small" }, spec.description) : null,
    el("p", { class: "field-error", id: errorId, role: "alert" }),
  );
}

// The envelope from the form; fields left empty are left out. Bad JSON is reported at its field.
function collect() {
  const envelope = { type: $("#send-type").value, payload: {} };
  const local = [];
  for (const input of document.querySelectorAll("#send-form [data-path]:is(input, select, textarea)")) {
    const path = input.dataset.path;
    let value;
    if (input.dataset.kind === "boolean") value = input.checked;
    else if (input.value === "") continue;
    else if (input.dataset.kind === "enum") value = JSON.parse(input.value);
    else if (input.dataset.kind === "number") value = Number(input.value);
    else if (input.dataset.kind === "json") {
      try { value = JSON.parse(input.value); } catch (e) { local.push({ path, message: `is not valid JSON: ${e.message}` }); continue; }
    } else value = input.value;
    const parts = path.split("/").slice(1);
    if (parts.length === 1 && parts[0] === "payload") envelope.payload = value;
    else if (parts[0] === "payload") envelope.payload[parts[1]] = value;
    else envelope[parts[0]] = value;
  }
  return { envelope, local };
}

function clearErrors() {
  for (const node of document.querySelectorAll("#send-form .field-error")) node.textContent = "";
  for (const node of document.querySelectorAll("#send-form [aria-invalid]")) node.removeAttribute("aria-invalid");
  $("#send-errors").replaceChildren();
}

// Each violation goes to the field its JSON pointer is in (the deepest match); the rest above the button.
function showErrors(errors) {
  clearErrors();
  const fieldsByPath = [...document.querySelectorAll("#send-form .field")];
  const general = [];
  for (const error of errors) {
    const path = error.path || "";
    const host = fieldsByPath
      .filter((f) => path === f.dataset.path || path.startsWith(`${f.dataset.path}/`))
      .sort((a, b) => b.dataset.path.length - a.dataset.path.length)[0];
    const requiredName = error.keyword === "required" && /'([^']+)'/.exec(error.message || "");
    const missing = requiredName && fieldsByPath.find((f) => f.dataset.path === `${path}/${requiredName[1]}`);
    const target = missing || host;
    if (target) {
      const slot = $(".field-error", target);
      slot.textContent = slot.textContent ? `${slot.textContent} ${error.message}` : error.message;
      $("input, select, textarea", target).setAttribute("aria-invalid", "true");
    } else {
      general.push(el("li", {}, `${path || "/"}: ${error.message}`));
    }
  }
  $("#send-errors").replaceChildren(...general);
}

let checkTimer = null;
function scheduleCheck() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(() => check(), 400);
}

async function check() {
  const { envelope, local } = collect();
  if (local.length) { showErrors(local); return false; }
  const verdict = await api("/console/validate", { method: "POST", body: envelope });
  if (verdict.valid) { clearErrors(); return envelope; }
  showErrors(verdict.errors.length ? verdict.errors : [{ path: "", message: verdict.detail }]);
  return false;
}

async function send(event) {
  event.preventDefault();
  clearTimeout(checkTimer);
  const out = $("#send-result");
  out.replaceChildren();
  let envelope;
  try { envelope = await check(); } catch (error) { toast(`Could not check the message: ${error.message}`, "error"); return; }
  if (!envelope) { const first = $("#send-form [aria-invalid]"); if (first) first.focus(); return; }
  const response = await api("/messages", { method: "POST", body: envelope, raw: true });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 202) {
    const status = response.headers.get("Location") || `/messages/${data.id}`;
    out.replaceChildren(el("p", { class: "ok", "data-status": "202" },
      "Accepted (202): ", el("span", { class: "mono" }, data.id), " on ", data.queue, ". ",
      el("a", { href: `#/messages/${encodeURIComponent(data.id)}`, "data-status-url": status }, "Follow its status")));
    return;
  }
  if (response.status === 401) { showLogin("That key was not accepted; type another."); return; }
  if (data && data.errors) showErrors(data.errors);
  out.replaceChildren(el("p", { class: "error" }, `Refused (${response.status}): ${(data && data.detail) || ""}`));
}

// ---- wiring ----
document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("#api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("#api-key").value = "";
    startSession();
  });
  $("#dl-filter").addEventListener("submit", (event) => { event.preventDefault(); loadDeadLetters(); });
  $("#dl-type").addEventListener("change", () => { $("#dl-detail").hidden = true; loadDeadLetters(); });
  $("#dl-all").addEventListener("change", () => {
    const on = $("#dl-all").checked;
    for (const row of document.querySelectorAll("#dl-table tbody tr")) {
      $("input[type=checkbox]", row).checked = on;
      if (on) state.deadLetters.selected.add(row.dataset.id); else state.deadLetters.selected.delete(row.dataset.id);
    }
    syncSelection();
  });
  $("#dl-redrive-selected").addEventListener("click", () => actOn("redrive", [...state.deadLetters.selected]));
  $("#dl-delete-selected").addEventListener("click", () => actOn("delete", [...state.deadLetters.selected]));
  $("#dl-redrive-matching").addEventListener("click", () => actOn("redrive", [], { matching: true }));
  $("#dl-delete-matching").addEventListener("click", () => actOn("delete", [], { matching: true }));
  $("#dl-export").addEventListener("click", () => exportMatching().catch((e) => toast(e.message, "error")));
  $("#dl-detail-close").addEventListener("click", () => { $("#dl-detail").hidden = true; });
  $("#dl-detail-redrive").addEventListener("click", () => actOn("redrive", [$("#dl-detail").dataset.id]));
  $("#dl-detail-delete").addEventListener("click", () => actOn("delete", [$("#dl-detail").dataset.id]));
  $("#lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#lookup-id").value.trim();
    if (location.hash !== `#/messages/${encodeURIComponent(id)}`) location.hash = `#/messages/${encodeURIComponent(id)}`;
    else lookUp();
  });
  $("#send-type").addEventListener("change", buildSendForm);
  $("#send-form").addEventListener("submit", send);
  window.addEventListener("hashchange", route);
  startSession();
});
