// posecompress web page: plain JavaScript over the JSON API of the same server (no build step).
"use strict";

const KEY_STORAGE = "posecompress.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 500;
const MIN_KEYPOINT_SCORE = 0.3; // keypoints below this are not drawn
const HOVER_RADIUS_PX = 12; // screen pixels around a keypoint that show its score
const PALETTE = ["#00e08a", "#ff6b3d", "#3da5ff", "#ffd23d", "#d23dff", "#3dffe9"];
const DEFAULT_SERVED = "@default"; // try-it choice: POST /predict without a version

const state = {
  model: null, // name
  aliases: {}, // alias -> version number (``latest`` included)
  versions: [], // GET /models/{name}/versions
  fields: new Map(), // version -> flattened report fields (GET /models/{name}/compare)
  datasets: [],
  skeleton: { keypoints: [], limbs: [] },
  jobs: [], // recent jobs of the model (GET /jobs)
  watching: null, // id of the job being polled
  yPicked: false, // the user chose the plot's vertical axis
};

// ------------------------------------------------------------------ DOM helpers
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (value === false) continue;
    else if (key === "class") node.className = value;
    else if (key in node) node[key] = value;
    else node.setAttribute(key, String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const enc = encodeURIComponent;
const num = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}
const fmtMs = (ms) => (ms === null ? "–" : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`);
const fmtMB = (bytes) => (bytes === null ? "–" : `${(bytes / 1e6).toFixed(2)} MB`);
const fmtRatio = (ratio) => (ratio === null ? "–" : `${ratio.toFixed(2)}×`);

// ------------------------------------------------------------------ API
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    return new ApiError(response.status, error.code, error.message);
  } catch {
    return new ApiError(response.status, `http_${response.status}`, text || response.statusText);
  }
}

/** fetch() with the stored API key; a 401 asks for the key once and retries. */
async function api(method, path, body) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = {};
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers["X-API-Key"] = key;
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload });
    if (response.ok) return response;
    const error = await errorOf(response);
    if (response.status === 401 && attempt === 0 && (await askKey(error.message))) continue;
    throw error;
  }
}

const getJSON = async (path) => (await api("GET", path)).json();

let keyPrompt = null; // one dialog at a time, however many requests got a 401
function askKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = `${reason}. The key is kept for this browser tab and sent as X-API-Key.`;
  $("#key-input").value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        keyPrompt = null;
        const key = $("#key-input").value.trim();
        if (dialog.returnValue === "ok" && key) {
          sessionStorage.setItem(KEY_STORAGE, key);
          resolve(true);
        } else resolve(false);
      },
      { once: true },
    );
  });
  dialog.showModal();
  return keyPrompt;
}

function showError(error) {
  const text = error instanceof ApiError ? `${error.message} (${error.status} ${error.code})` : String(error.message || error);
  $("#error-text").textContent = text;
  $("#error").hidden = false;
  console.error(error);
}
const clearError = () => { $("#error").hidden = true; };

/** Run an event handler, showing the API's message when it fails. */
const guarded = (handler) => async (event) => {
  if (event && event.type === "submit") event.preventDefault();
  clearError();
  try {
    await handler(event);
  } catch (error) {
    showError(error);
  }
};

// ------------------------------------------------------------------ what is known of each version
const modelPath = () => `/models/${enc(state.model)}`;
const servedAlias = () => ("default" in state.aliases ? "default" : "latest");
const servedVersion = () => state.aliases[servedAlias()] ?? null;
const readyVersions = () => state.versions.filter((v) => v.status === "ready");

function describe(version) {
  const steps = version.recipe && version.recipe.steps;
  if (Array.isArray(steps) && steps.length) {
    return steps.map((s) => (s.mode ? `${s.method} ${s.mode}` : s.method)).join(" → ");
  }
  return (version.recipe && version.recipe.source) || version.format;
}

function modelBytes(version) {
  const artifact = version.artifacts.find((a) => a.role === "model");
  return artifact ? artifact.size : null;
}

/** An AP confidence interval however the report spells it ([low, high] or {low, high}). */
function apInterval(fields) {
  for (const [key, value] of Object.entries(fields)) {
    if (!key.startsWith("accuracy.ap_ci")) continue;
    if (Array.isArray(value) && value.length === 2 && value.every((x) => num(x) !== null)) return value;
  }
  const low = num(fields["accuracy.ap_ci.low"] ?? fields["accuracy.ap_ci.lo"]);
  const high = num(fields["accuracy.ap_ci.high"] ?? fields["accuracy.ap_ci.hi"]);
  return low !== null && high !== null ? [low, high] : null;
}

/** ``report.budget`` of a version: within or not, and what it was judged on (a chain's
 * verdict lists its steps'). Unknown shapes show as no verdict. */
function budgetOf(report) {
  const budget = report && report.budget;
  if (!budget || typeof budget.within_budget !== "boolean") return null;
  const verdicts = Array.isArray(budget.steps) ? budget.steps : [budget];
  const over = verdicts.flatMap((v) => (Array.isArray(v && v.over) ? v.over.map(String) : []));
  const details = verdicts.flatMap((v, index) => {
    const measured = v && typeof v.measured === "object" && v.measured ? v.measured : {};
    const numbers = Object.entries(measured).filter(([, x]) => num(x) !== null).map(([k, x]) => `${k} ${+x.toFixed(3)}`);
    const prefix = verdicts.length > 1 ? `step ${index + 1}: ` : "";
    return numbers.length ? [`${prefix}${numbers.join(", ")}`] : [];
  });
  return { within: budget.within_budget, over, details };
}

/** version -> its numbers. A version that was never measured itself (the imported one) takes
 * what its newest child measured of it as a parent; those are listed in ``inherited``. */
function measurements() {
  const out = new Map();
  for (const version of state.versions) {
    const fields = state.fields.get(version.version) || {};
    out.set(version.version, {
      latency: num(fields["latency_ms.p50"]),
      latencyRatio: num(fields.latency_ratio),
      ap: num(fields["accuracy.ap"]),
      apInterval: apInterval(fields),
      oks: num(fields["fidelity.mean_oks_vs_parent"]),
      px: num(fields["fidelity.mean_landmark_px"]),
      size: modelBytes(version),
      budget: budgetOf(version.report),
      inherited: new Set(),
    });
  }
  const newestFirst = [...state.versions].sort((a, b) => b.version - a.version);
  for (const child of newestFirst) {
    const parent = out.get(child.parent);
    if (!parent) continue;
    const fields = state.fields.get(child.version) || {};
    for (const [key, field] of [["latency", "parent_latency_ms.p50"], ["ap", "parent_accuracy.ap"]]) {
      if (parent[key] === null && num(fields[field]) !== null) {
        parent[key] = num(fields[field]);
        parent.inherited.add(key);
      }
    }
  }
  for (const version of state.versions) {
    const m = out.get(version.version);
    if (version.parent === null && m.oks === null) {
      m.oks = 1; // a root is the reference its descendants' fidelity starts from
      m.inherited.add("oks");
    }
    const parent = state.versions.find((v) => v.version === version.parent);
    m.sizeRatio = parent && m.size !== null && modelBytes(parent) ? m.size / modelBytes(parent) : null;
  }
  return out;
}

function metricCell(m, key, text) {
  const inherited = m.inherited.has(key);
  return el("td", { class: inherited ? "num inherited" : "num", title: inherited ? "measured as a parent" : null }, text);
}

function budgetCell(budget) {
  if (!budget) return el("td", {}, "–");
  return el("td", {},
    el("span", {
      class: `badge ${budget.within ? "ok" : "bad"}`,
      title: [...budget.over, ...budget.details].join("\n") || null,
      "data-within-budget": budget.within,
    }, budget.within ? "within" : "over"),
    budget.over.length ? el("div", { class: "over" }, budget.over.join("; ")) : null);
}

// ------------------------------------------------------------------ loading
async function loadModels() {
  const models = await getJSON("/models");
  const select = $("#model-select");
  select.replaceChildren(...models.map((m) => el("option", { value: m.name }, m.name)));
  if (!models.length) {
    state.model = null;
    $("#versions-table tbody").replaceChildren(el("tr", {}, el("td", { colSpan: 9 },
      "No models yet: upload one with POST /models (serve imports blazepose-full on its first start).")));
    return;
  }
  const wanted = models.some((m) => m.name === state.model) ? state.model : models[0].name;
  select.value = wanted;
  await loadModel(wanted);
}

async function loadModel(name) {
  const [model, versions] = await Promise.all([
    getJSON(`/models/${enc(name)}`),
    getJSON(`/models/${enc(name)}/versions`),
  ]);
  let fields = new Map();
  if (versions.length) {
    const numbers = versions.map((v) => v.version).join(",");
    const table = await getJSON(`/models/${enc(name)}/compare?versions=${numbers}`);
    fields = new Map(table.rows.map((row) => [row.version, row.fields]));
  }
  Object.assign(state, { model: name, aliases: model.aliases, versions, fields });
  document.body.dataset.model = name;
  renderAll();
}

async function loadDatasets() {
  state.datasets = await getJSON("/datasets");
  renderDatasets();
}

function renderAll() {
  const m = measurements();
  renderModels(m);
  renderLineage();
  renderAliasForm();
  renderCompare(m);
  renderVersionChoices();
  renderPreview();
}

// ------------------------------------------------------------------ models view
function aliasChips(version) {
  const served = servedAlias();
  return version.aliases.map((alias) =>
    el("span", { class: alias === served ? "alias served" : "alias", title: alias === served ? "served by /predict by default" : null }, alias));
}

function renderModels(m) {
  const served = servedVersion();
  $("#served-version").textContent = served === null ? "nothing yet" : `v${served}`;
  $("#served-alias").textContent = servedAlias();
  $("#view-models").dataset.served = served ?? "";
  const rows = [...state.versions].reverse().map((v) => {
    const x = m.get(v.version);
    const ap = x.ap === null ? "–" : fmt(x.ap) + (x.apInterval ? ` [${fmt(x.apInterval[0])}, ${fmt(x.apInterval[1])}]` : "");
    const latency = fmtMs(x.latency) + (x.latencyRatio !== null ? ` (${fmtRatio(x.latencyRatio)})` : "");
    return el("tr", { "data-version": v.version, class: v.version === served ? "served" : null },
      el("td", {}, `v${v.version}`),
      el("td", {}, el("span", { class: `badge ${v.status}`, title: v.error || null }, v.status)),
      el("td", {}, describe(v)),
      el("td", {}, ...aliasChips(v)),
      el("td", { class: "num" }, fmtMB(x.size)),
      metricCell(x, "latency", latency),
      metricCell(x, "ap", ap),
      metricCell(x, "oks", x.oks === null ? "–" : fmt(x.oks)),
      budgetCell(x.budget));
  });
  $("#versions-table tbody").replaceChildren(...rows);
  highlightRoute();
}

function renderLineage() {
  const byParent = new Map();
  const known = new Set(state.versions.map((v) => v.version));
  for (const v of state.versions) {
    const parent = known.has(v.parent) ? v.parent : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(v);
  }
  const branch = (parent) => {
    const children = byParent.get(parent) || [];
    if (!children.length) return null;
    return el("ul", { class: "tree" }, ...children.map((v) => el("li", {},
      el("span", { class: `node ${v.status}`, "data-version": v.version },
        el("strong", {}, `v${v.version}`), ` ${describe(v)} `, ...aliasChips(v)),
      branch(v.version))));
  };
  $("#lineage").replaceChildren(branch(null) || el("p", { class: "note" }, "no versions"));
}

function renderAliasForm() {
  const names = new Set(["default", "production", "staging"]);
  for (const alias of Object.keys(state.aliases)) if (alias !== "latest") names.add(alias);
  $("#alias-names").replaceChildren(...[...names].map((n) => el("option", { value: n })));
  const select = $("#alias-version");
  const previous = select.value;
  select.replaceChildren(...readyVersions().reverse().map((v) => el("option", { value: v.version }, `v${v.version} · ${describe(v)}`)));
  if (previous && readyVersions().some((v) => String(v.version) === previous)) select.value = previous;
}

async function moveAlias() {
  const alias = $("#alias-name").value.trim();
  const version = Number($("#alias-version").value);
  await api("PUT", `${modelPath()}/aliases/${enc(alias)}`, { version });
  await loadModel(state.model);
}

// ------------------------------------------------------------------ compare view
// ``fromZero``: the axis starts at 0, so that distances read as proportions (a 1 ms jitter
// on 70 ms stays small); fidelity sits near 1 and is zoomed instead
const AXES = {
  latency: { label: "latency p50 (ms)", value: (m) => m.latency, fromZero: true },
  size: { label: "model size (MB)", value: (m) => (m.size === null ? null : m.size / 1e6), fromZero: true },
  ap: { label: "accuracy (COCO AP)", value: (m) => m.ap, fromZero: true },
  oks: { label: "fidelity (OKS vs parent)", value: (m) => m.oks, fromZero: false },
};

/** Points no other point beats on both axes (lower x, higher y), in x order. */
function paretoFront(points) {
  const sorted = [...points].sort((a, b) => a.x - b.x || b.y - a.y);
  const front = [];
  for (const p of sorted) if (!front.length || p.y > front[front.length - 1].y) front.push(p);
  return front;
}

function niceTicks(low, high, count = 5) {
  const span = high - low || Math.abs(high) || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
  return ticks;
}

function axisRange(values, fromZero) {
  const low = Math.min(...values);
  const high = Math.max(...values);
  if (fromZero && low >= 0) return [0, high * 1.1 || 1];
  const pad = (high - low) * 0.12 || Math.abs(high) * 0.1 || 0.1;
  return [low - pad, high + pad];
}

function renderPlot(m) {
  const xAxis = AXES[$("#plot-x").value];
  const yAxis = AXES[$("#plot-y").value];
  const plot = $("#pareto");
  const points = readyVersions()
    .map((v) => ({ version: v.version, x: xAxis.value(m.get(v.version)), y: yAxis.value(m.get(v.version)) }))
    .filter((p) => p.x !== null && p.y !== null);
  plot.dataset.points = points.length;
  const [W, H, L, R, T, B] = [720, 380, 70, 24, 20, 52];
  if (!points.length) {
    plot.replaceChildren(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
      `No version has both ${yAxis.label} and ${xAxis.label} yet: compress one.`));
    return;
  }
  const [x0, x1] = axisRange(points.map((p) => p.x), xAxis.fromZero);
  const [y0, y1] = axisRange(points.map((p) => p.y), yAxis.fromZero);
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const parts = [];
  for (const t of niceTicks(x0, x1)) {
    parts.push(svg("line", { x1: sx(t), x2: sx(t), y1: T, y2: H - B, class: "gridline" }));
    parts.push(svg("text", { x: sx(t), y: H - B + 18, "text-anchor": "middle", class: "tick" }, String(t)));
  }
  for (const t of niceTicks(y0, y1)) {
    parts.push(svg("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: "gridline" }));
    parts.push(svg("text", { x: L - 8, y: sy(t) + 4, "text-anchor": "end", class: "tick" }, String(t)));
  }
  parts.push(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
  parts.push(svg("text", { x: (L + W - R) / 2, y: H - 10, "text-anchor": "middle", class: "axis" }, xAxis.label));
  parts.push(svg("text", { x: 16, y: (T + H - B) / 2, "text-anchor": "middle", class: "axis",
    transform: `rotate(-90 16 ${(T + H - B) / 2})` }, yAxis.label));
  const front = paretoFront(points);
  const onFront = new Set(front.map((p) => p.version));
  // a staircase: each front point holds its accuracy until the next, slower one
  const stairs = front.flatMap((p, i) => (i === 0 ? [[p.x, p.y]] : [[p.x, front[i - 1].y], [p.x, p.y]]));
  parts.push(svg("polyline", { points: stairs.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), class: "front" }));
  const served = servedVersion();
  const placed = [];
  const servedPoint = points.find((p) => p.version === served);
  if (servedPoint) placed.push(labelBox(sx(servedPoint.x), sy(servedPoint.y) + 28, "middle", servedAlias().length));
  for (const p of points) {
    const group = svg("g", { class: onFront.has(p.version) ? "point on-front" : "point", "data-version": p.version },
      svg("title", {}, `v${p.version}: ${yAxis.label} ${fmt(p.y)}, ${xAxis.label} ${fmt(p.x, 2)}`));
    if (p.version === served) {
      group.append(svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 12, class: "served-ring" }));
      group.append(svg("text", { x: sx(p.x), y: sy(p.y) + 28, "text-anchor": "middle", class: "served-label" }, servedAlias()));
      group.setAttribute("data-served", "true");
    }
    group.append(svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 6, class: "dot" }));
    const text = `v${p.version}`;
    const spot = placeLabel(sx(p.x), sy(p.y), text.length, placed);
    group.append(svg("text", { x: spot.x, y: spot.y, "text-anchor": spot.anchor, class: "label" }, text));
    parts.push(group);
  }
  plot.replaceChildren(...parts);
}

/** The box a label of ``chars`` characters covers (13 px text, baseline at ``y``). */
function labelBox(x, y, anchor, chars) {
  const width = chars * 8;
  const left = anchor === "end" ? x - width : anchor === "middle" ? x - width / 2 : x;
  return { x, y, anchor, left, right: left + width, top: y - 12, bottom: y + 2 };
}

/** The first spot around a point where its label overlaps no label placed so far. */
function placeLabel(cx, cy, chars, placed) {
  const offsets = [[10, -10, "start"], [-10, -10, "end"], [10, 20, "start"], [-10, 20, "end"], [0, -16, "middle"], [0, 34, "middle"]];
  const boxes = offsets.map(([dx, dy, anchor]) => labelBox(cx + dx, cy + dy, anchor, chars));
  const free = (b) => placed.every((o) => b.right < o.left || b.left > o.right || b.bottom < o.top || b.top > o.bottom);
  const box = boxes.find(free) || boxes[0];
  placed.push(box);
  return box;
}

function renderCompare(m) {
  if (!state.yPicked) {
    const anyAp = readyVersions().some((v) => m.get(v.version).ap !== null);
    $("#plot-y").value = anyAp ? "ap" : "oks";
  }
  renderPlot(m);
  const xAxis = AXES[$("#plot-x").value];
  const yAxis = AXES[$("#plot-y").value];
  const measured = readyVersions().map((v) => ({ version: v.version, x: xAxis.value(m.get(v.version)), y: yAxis.value(m.get(v.version)) }))
    .filter((p) => p.x !== null && p.y !== null);
  const onFront = new Set(paretoFront(measured).map((p) => p.version));
  const served = servedVersion();
  const rows = readyVersions().map((v) => {
    const x = m.get(v.version);
    return el("tr", { "data-version": v.version, class: v.version === served ? "served" : null },
      el("td", {}, `v${v.version}`, v.version === served ? el("span", { class: "alias served" }, servedAlias()) : null),
      el("td", {}, describe(v)),
      metricCell(x, "latency", fmtMs(x.latency)),
      el("td", { class: "num", title: "median per-round ratio to the parent, measured interleaved" }, fmtRatio(x.latencyRatio)),
      el("td", { class: "num" }, fmtMB(x.size)),
      el("td", { class: "num", title: "model file vs the parent's" }, fmtRatio(x.sizeRatio)),
      metricCell(x, "ap", fmt(x.ap)),
      metricCell(x, "oks", fmt(x.oks)),
      el("td", { class: "num" }, x.px === null ? "–" : fmt(x.px, 2)),
      budgetCell(x.budget),
      el("td", {}, onFront.has(v.version) ? "on front" : ""));
  });
  $("#compare-table tbody").replaceChildren(...rows);
}

// ------------------------------------------------------------------ compress view
function renderDatasets() {
  const label = (d) => `${d.name || d.id} (${d.image_count} images${d.has_annotations ? ", labelled" : ""})`;
  const train = $("#compress-dataset");
  const evalSelect = $("#compress-eval");
  const [trainValue, evalValue] = [train.value, evalSelect.value];
  train.replaceChildren(...state.datasets.map((d) => el("option", { value: d.id }, label(d))));
  if (!state.datasets.length) train.append(el("option", { value: "" }, "no datasets: POST /datasets first"));
  evalSelect.replaceChildren(el("option", { value: "" }, "– none –"),
    ...state.datasets.filter((d) => d.has_annotations).map((d) => el("option", { value: d.id }, label(d))));
  if (trainValue) train.value = trainValue;
  if (evalValue) evalSelect.value = evalValue;
  renderPreview();
}

function renderVersionChoices() {
  const option = (v) => el("option", { value: v.version }, `v${v.version} · ${describe(v)}`);
  const ready = readyVersions().reverse();
  for (const [select, extra] of [
    [$("#compress-source"), []],
    [$("#try-a"), [el("option", { value: DEFAULT_SERVED }, `what /predict serves (${servedAlias()})`)]],
    [$("#try-b"), [el("option", { value: "" }, "– nothing –")]],
  ]) {
    const previous = select.value;
    select.replaceChildren(...extra, ...ready.map(option));
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
    else if (select.id === "compress-source" && servedVersion() !== null) select.value = servedVersion();
  }
}

function setPath(target, path, value) {
  const keys = path.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys[keys.length - 1]] = value;
}

/** The compress request the form describes; empty fields are left to the server's defaults. */
function compressRequest() {
  const form = $("#compress-form");
  const field = (name) => form.elements.namedItem(name);
  const method = field("method").value;
  const step = { method };
  for (const input of $$(`fieldset[data-method="${method}"] [name]`, form)) {
    if (input.value === "") continue;
    setPath(step, input.name, input.type === "number" ? Number(input.value) : input.value);
  }
  const extra = field("step_json").value.trim();
  if (extra) {
    let fields;
    try {
      fields = JSON.parse(extra);
    } catch {
      fields = null;
    }
    if (!fields || typeof fields !== "object" || Array.isArray(fields)) throw new Error("more step fields: not a JSON object");
    Object.assign(step, fields, { method });
  }
  const body = { recipe: [step], dataset: field("dataset").value };
  if (field("eval_dataset").value) body.eval_dataset = field("eval_dataset").value;
  for (const name of ["max_crops", "augment_copies", "latency_rounds"]) {
    if (field(name).value !== "") body[name] = Number(field(name).value);
  }
  if (field("keep_intermediate").checked) body.keep_intermediate = true;
  return { path: `${modelPath()}/versions/${enc(field("source").value)}/compress`, body };
}

function renderPreview() {
  const method = $("#compress-method").value;
  for (const fieldset of $$("#compress-form fieldset[data-method]")) fieldset.hidden = fieldset.dataset.method !== method;
  if (!state.model) return;
  try {
    const { path, body } = compressRequest();
    $("#compress-preview").textContent = `POST ${path}\n${JSON.stringify(body, null, 2)}`;
  } catch (error) {
    $("#compress-preview").textContent = error.message;
  }
}

async function startCompression() {
  const { path, body } = compressRequest();
  const job = await (await api("POST", path, body)).json();
  watchJob(job);
}

function renderJob(job) {
  const listed = state.jobs.findIndex((j) => j.id === job.id);
  if (listed >= 0) {
    state.jobs[listed] = job;
    renderJobs();
  }
  const box = $("#job");
  box.hidden = false;
  box.dataset.status = job.status;
  $("#job-id").textContent = job.id;
  const bar = $("#job-progress");
  bar.value = job.progress;
  bar.dataset.progress = job.progress;
  $("#job-percent").textContent = `${Math.round(job.progress * 100)}%`;
  $("#job-status").textContent = job.status;
  $("#job-message").textContent = job.error || job.message || "";
  $("#job-message").className = job.status === "failed" ? "error-text" : "";
  $("#job-cancel").disabled = TERMINAL.has(job.status);
  $("#job-cancel").dataset.job = job.id;
  const link = $("#job-result");
  link.hidden = !job.result;
  if (job.result) {
    link.textContent = `${job.result.model} v${job.result.version}`;
    link.href = `#models/${job.result.version}`;
    link.dataset.version = job.result.version;
  }
}

async function watchJob(job) {
  state.watching = job.id;
  renderJob(job);
  try {
    await loadJobs();
    while (state.watching === job.id && !TERMINAL.has(job.status)) {
      await sleep(POLL_MS);
      job = await getJSON(`/jobs/${enc(job.id)}`);
      renderJob(job);
    }
    if (TERMINAL.has(job.status) && job.params.model === state.model) {
      await Promise.all([loadModel(state.model), loadJobs()]);
    }
  } catch (error) {
    showError(error);
  }
}

async function loadJobs() {
  if (!state.model) return;
  state.jobs = (await getJSON("/jobs?limit=50")).filter((j) => j.params.model === state.model).slice(0, 10);
  renderJobs();
}

function renderJobs() {
  const rows = state.jobs.map((job) => {
    let action = null;
    if (!TERMINAL.has(job.status)) {
      action = el("button", { type: "button", class: "small", onclick: guarded(() => watchJob(job)) }, "watch");
    } else if (job.result) {
      action = el("a", { href: `#models/${job.result.version}` }, `v${job.result.version}`);
    }
    return el("tr", { "data-job": job.id },
      el("td", {}, new Date(job.created_at).toLocaleString()),
      el("td", {}, job.kind),
      el("td", {}, `v${job.params.version}`),
      el("td", {}, el("span", { class: `badge ${job.status}` }, job.status)),
      el("td", { class: "num" }, `${Math.round(job.progress * 100)}%`),
      el("td", { class: job.status === "failed" ? "error-text" : null }, job.error || job.message || ""),
      el("td", {}, action));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, class: "note" }, "no jobs yet")));
  $("#jobs-table tbody").replaceChildren(...rows);
}

async function cancelJob() {
  const id = $("#job-cancel").dataset.job;
  renderJob(await (await api("DELETE", `/jobs/${enc(id)}`)).json());
}

// ------------------------------------------------------------------ try it
function parseServerTiming(header) {
  const stages = [];
  for (const part of (header || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) stages.push([name, Number(dur.slice(4))]);
  }
  return stages;
}

async function predict(choice, file, detector) {
  const form = new FormData();
  form.append("image", file);
  form.append("detector", detector);
  let path = `${modelPath()}/versions/${enc(choice)}/predict`;
  if (choice === DEFAULT_SERVED) {
    path = "/predict";
    form.append("model", state.model);
  }
  const started = performance.now();
  const response = await api("POST", path, form);
  const result = await response.json();
  const roundTrip = performance.now() - started;
  return { result, stages: parseServerTiming(response.headers.get("Server-Timing")), roundTrip };
}

function drawPeople(canvas, bitmap, result) {
  const { width, height } = result.image;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.max(width, height) / 320));
  result.people.forEach((person, index) => {
    const color = PALETTE[index % PALETTE.length];
    const kp = person.keypoints;
    const visible = (k) => k && k.score >= MIN_KEYPOINT_SCORE;
    ctx.strokeStyle = color;
    ctx.lineWidth = line;
    ctx.setLineDash([line * 3, line * 2]);
    const [bx, by, bw, bh] = person.bbox;
    ctx.strokeRect(bx, by, bw, bh);
    ctx.setLineDash([]);
    ctx.font = `${line * 7}px sans-serif`;
    ctx.fillStyle = color;
    ctx.fillText(`#${index + 1} ${person.score.toFixed(2)}`, bx + line, Math.max(line * 7, by - line * 2));
    ctx.lineWidth = line * 1.5;
    ctx.lineCap = "round";
    for (const [a, b] of state.skeleton.limbs) {
      if (!visible(kp[a]) || !visible(kp[b])) continue;
      ctx.beginPath();
      ctx.moveTo(kp[a].x, kp[a].y);
      ctx.lineTo(kp[b].x, kp[b].y);
      ctx.stroke();
    }
    for (const k of kp.filter(visible)) {
      ctx.beginPath();
      ctx.arc(k.x, k.y, line * 2, 0, 2 * Math.PI);
      ctx.fillStyle = color;
      ctx.fill();
      ctx.lineWidth = Math.max(1, line / 2);
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      ctx.strokeStyle = color;
    }
  });
}

function nearestKeypoint(canvas, people, event) {
  const rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width;
  const x = (event.clientX - rect.left) * scale;
  const y = (event.clientY - rect.top) * scale;
  let best = null;
  people.forEach((person, index) => {
    for (const k of person.keypoints) {
      const d = Math.hypot(k.x - x, k.y - y);
      if (d <= HOVER_RADIUS_PX * scale && (!best || d < best.d)) best = { d, k, index };
    }
  });
  return best;
}

function showPanel(panel, bitmap, { result, stages, roundTrip }) {
  const canvas = $("canvas", panel);
  drawPeople(canvas, bitmap, result);
  panel.dataset.people = result.people.length;
  panel.dataset.version = result.version;
  canvas.dataset.people = result.people.length;
  $("figcaption .what", panel).textContent = `${result.model} v${result.version}: ${result.people.length} ${result.people.length === 1 ? "person" : "people"}`;
  const rows = stages.map(([name, ms]) => el("tr", { "data-stage": name }, el("th", {}, name), el("td", { class: "num" }, fmtMs(ms))));
  rows.push(el("tr", { class: "round-trip" }, el("th", {}, "round trip"), el("td", { class: "num" }, fmtMs(roundTrip))));
  $("table.timing tbody", panel).replaceChildren(...rows);
  const tooltip = $("#tooltip");
  canvas.onmousemove = (event) => {
    const hit = nearestKeypoint(canvas, result.people, event);
    if (!hit) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = `#${hit.index + 1} ${hit.k.name}: score ${hit.k.score.toFixed(2)}`;
    tooltip.style.left = `${event.pageX + 14}px`;
    tooltip.style.top = `${event.pageY + 14}px`;
    tooltip.hidden = false;
  };
  canvas.onmouseleave = () => { tooltip.hidden = true; };
}

function emptyPanel(choice) {
  return el("figure", { class: "panel", "data-choice": choice },
    el("canvas", { width: 16, height: 9 }),
    el("figcaption", {}, el("div", { class: "what" }, "running…"),
      el("table", { class: "timing" }, el("caption", {}, "Server-Timing"), el("tbody"))));
}

async function tryIt() {
  const file = $("#try-image").files[0];
  if (!file) throw new Error("choose a photo first");
  const form = $("#try-form");
  const detector = form.elements.namedItem("detector").value;
  const choices = [$("#try-a").value, $("#try-b").value].filter(Boolean);
  const bitmap = await createImageBitmap(file);
  const panels = choices.map(emptyPanel);
  $("#panels").replaceChildren(...panels);
  for (const [index, choice] of choices.entries()) {
    try {
      showPanel(panels[index], bitmap, await predict(choice, file, detector));
    } catch (error) {
      $("figcaption .what", panels[index]).textContent = error.message;
      throw error;
    }
  }
}

// ------------------------------------------------------------------ views and start
function route() {
  const [view] = location.hash.slice(1).split("/");
  const name = ["models", "compare", "compress", "try"].includes(view) ? view : "models";
  for (const section of $$(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of $$("nav a")) link.classList.toggle("active", link.dataset.view === name);
  document.body.dataset.view = name;
  if (name === "compress") Promise.all([loadDatasets(), loadJobs()]).catch(showError);
  highlightRoute();
}

function highlightRoute() {
  const [, version] = location.hash.slice(1).split("/");
  for (const row of $$("#versions-table tbody tr")) row.classList.toggle("highlight", row.dataset.version === version);
}

async function start() {
  window.addEventListener("hashchange", route);
  $("#model-select").addEventListener("change", guarded((e) => loadModel(e.target.value)));
  $("#alias-form").addEventListener("submit", guarded(moveAlias));
  $("#plot-x").addEventListener("change", () => renderCompare(measurements()));
  $("#plot-y").addEventListener("change", () => {
    state.yPicked = true;
    renderCompare(measurements());
  });
  $("#compress-form").addEventListener("input", renderPreview);
  $("#compress-form").addEventListener("submit", guarded(startCompression));
  $("#job-cancel").addEventListener("click", guarded(cancelJob));
  $("#try-form").addEventListener("submit", guarded(tryIt));
  $("#error-close").addEventListener("click", clearError);
  $("#api-key-button").addEventListener("click", () => askKey("Changes on this server may need an API key"));
  route();
  try {
    state.skeleton = await getJSON("/ui/skeleton.json");
    await Promise.all([loadModels(), loadDatasets()]);
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "true";
}

start();
