// The dashboard page: one EventSource on /events, plain DOM and canvas, no library.
// Everything shown comes from the daemon; user text is only ever set as textContent.
"use strict";

const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285",
  "#a61e4d", "#5c940d"];
const CHARTS = {
  offset: { unit: "s", digits: 4 },
  lamport: { unit: "", digits: 0 },
  throughput: { unit: "ops/s", digits: 1 },
  lag: { unit: "ops", digits: 0 },
};
const MAX_TIMELINE = 200;

const state = {
  topology: null,
  series: { offset: {}, lamport: {}, throughput: {}, lag: {} },
  history: 600,
  channels: {},
  demo: false,
  dirty: false,
};
window.dashboard = state; // for people poking at it from the console

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function color(name) {
  const names = serverNames();
  const i = names.indexOf(name);
  return COLORS[(i < 0 ? names.length : i) % COLORS.length];
}

function serverNames() {
  const names = new Set();
  for (const by of Object.values(state.series)) for (const n of Object.keys(by)) names.add(n);
  if (state.topology) for (const s of state.topology.servers) names.add(s.name);
  return [...names].sort();
}

function fmt(value, digits, signed) {
  if (value === null || value === undefined) return "–";
  const s = Number(value).toFixed(digits);
  return signed && value >= 0 ? "+" + s : s;
}

function clockTime(t) {
  return new Date(t * 1000).toISOString().slice(11, 23);
}

// -- topology ----------------------------------------------------------------------

function infraNode(name, up, detail) {
  const st = up === null || up === undefined ? "unknown" : up ? "up" : "down";
  return el("div", { class: "node infra", "data-node": name, "data-state": st },
    el("div", { class: "title", text: name }),
    el("div", { class: "state", text: st === "unknown" ? "not heard yet" : st }),
    detail ? el("div", { class: "detail", text: detail }) : null);
}

// Server cards are made once and updated in place: a card replaced under the pointer
// would swallow a click on its demo buttons.
const cards = new Map();

function serverNode(s) {
  let card = cards.get(s.name);
  if (!card) {
    const node = el("div", { class: "node server", "data-server": s.name });
    const title = el("div", { class: "title" }, s.name, el("span", { class: "crown", text: "coordinator" }));
    const stateLine = el("div", { class: "state" });
    const dl = el("dl");
    node.append(title, stateLine, dl);
    const buttons = el("div", { class: "buttons" });
    for (const action of ["pause", "resume", "kill", "restart"]) {
      const b = el("button", { "data-action": action, text: action });
      b.addEventListener("click", () => demo(action, s.name));
      buttons.append(b);
    }
    node.append(buttons);
    card = { node, stateLine, dl, buttons };
    cards.set(s.name, card);
  }
  const { node, stateLine, dl, buttons } = card;
  node.dataset.state = s.state;
  node.dataset.coordinator = String(Boolean(s.coordinator));
  node.dataset.rank = String(s.rank);
  stateLine.textContent = `${s.state} · rank ${s.rank ?? "?"}` + (s.listed ? "" : " · not listed");
  const rows = [];
  const row = (k, v) => { rows.push(el("dt", { text: k }), el("dd", { text: v })); };
  row("Lamport", fmt(s.lamport, 0));
  row("offset", s.offset === null || s.offset === undefined ? "–" : fmt(s.offset, 4, true) + " s");
  row("applied", fmt(s.applied, 0));
  row("behind", fmt(s.lag, 0));
  row("ops/s", fmt(s.throughput, 1));
  if (s.requests !== null && s.requests !== undefined) row("requests/s", fmt(s.requests, 1));
  if (s.election && s.election !== "idle") row("election", s.election);
  if (s.storage_error) row("storage", s.storage_error);
  if (s.broker && typeof s.broker === "object") {
    for (const [k, v] of Object.entries(s.broker)) {
      // Epoch seconds (e.g. when the broker last heard from it) read as a time of day.
      row("broker " + k, typeof v === "number" && v > 1e9 ? clockTime(v) : String(v));
    }
  } else if (s.broker !== undefined) {
    row("broker", String(s.broker));
  }
  dl.replaceChildren(...rows);
  buttons.hidden = !state.demo;
  return node;
}

function renderTopology() {
  const t = state.topology;
  if (!t) return;
  const infra = document.getElementById("infra");
  const ago = t.proxy === null ? null : t.proxy;
  infra.replaceChildren(
    infraNode("reference", t.reference, "ranks and the list of live servers"),
    infraNode("broker", t.broker, "routes client requests"),
    infraNode("proxy", ago, "publications: posts, messages, coordinators"));
  const list = document.getElementById("servers");
  const nodes = t.servers.map(serverNode);
  // Reorder or add only where needed; cards of forgotten servers go.
  nodes.forEach((n, i) => { if (list.children[i] !== n) list.insertBefore(n, list.children[i] || null); });
  while (list.children.length > nodes.length) list.lastChild.remove();
  for (const name of [...cards.keys()]) if (!t.servers.some((s) => s.name === name)) cards.delete(name);
  document.getElementById("private-count").textContent = String(t.private_messages);
}

// -- charts ------------------------------------------------------------------------

function addPoints(points, at) {
  for (const [key, byServer] of Object.entries(points)) {
    const series = state.series[key];
    if (!series) continue;
    for (const [name, value] of Object.entries(byServer)) {
      const pts = series[name] || (series[name] = []);
      pts.push([at, value]);
      if (pts.length > state.history) pts.splice(0, pts.length - state.history);
    }
  }
}

function drawChart(key) {
  const canvas = document.getElementById("chart-" + key);
  const spec = CHARTS[key];
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const series = state.series[key];
  const names = Object.keys(series).sort();
  let t0 = Infinity, t1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const n of names) for (const [t, v] of series[n]) {
    t0 = Math.min(t0, t); t1 = Math.max(t1, t); y0 = Math.min(y0, v); y1 = Math.max(y1, v);
  }
  const left = 64, right = 8, top = 8, bottom = 20;
  ctx.strokeStyle = "#dde1e8"; ctx.fillStyle = "#6b7385"; ctx.font = "11px system-ui";
  ctx.strokeRect(left, top, w - left - right, h - top - bottom);
  if (!isFinite(t0)) { ctx.fillText("waiting for data", left + 8, top + 18); return; }
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  if (t1 - t0 < 1) t0 = t1 - 1;
  const x = (t) => left + (t - t0) / (t1 - t0) * (w - left - right);
  const y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4;
    const yy = y(v);
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
    const digits = key === "offset" ? 3 : (y1 - y0 < 8 ? 1 : spec.digits);
    ctx.fillText(fmt(v, digits, false), 4, yy + 4);
  }
  ctx.fillText(`${Math.round(t1 - t0)} s`, w - right - 40, h - 4);
  for (const n of names) {
    const pts = series[n];
    ctx.strokeStyle = color(n); ctx.lineWidth = 2; ctx.beginPath();
    pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke(); ctx.lineWidth = 1;
  }
  const legend = document.getElementById("legend-" + key);
  legend.replaceChildren(...names.map((n) => {
    const pts = series[n];
    const last = pts.length ? pts[pts.length - 1][1] : null;
    return el("li", { "data-server": n, "data-last": last === null ? "" : String(last) },
      el("span", { class: "swatch", style: `background:${color(n)}` }), n + " ",
      el("span", { class: "value", text: fmt(last, spec.digits, key === "offset") + (spec.unit ? " " + spec.unit : "") }));
  }));
}

function redraw() {
  if (state.dirty) return;
  state.dirty = true;
  requestAnimationFrame(() => {
    state.dirty = false;
    for (const key of Object.keys(CHARTS)) drawChart(key);
  });
}

// -- timeline and channels ---------------------------------------------------------

function addEvent(e) {
  const list = document.getElementById("timeline");
  list.prepend(el("li", { "data-kind": e.kind },
    el("time", { text: clockTime(e.at) }), el("span", { class: "kind", text: e.kind }),
    document.createTextNode(e.text)));
  while (list.children.length > MAX_TIMELINE) list.lastChild.remove();
}

function channelBox(name) {
  let box = document.querySelector(`.channel[data-channel="${CSS.escape(name)}"]`);
  if (!box) {
    box = el("div", { class: "channel", "data-channel": name },
      el("h3", { text: "#" + name }), el("ol"));
    document.getElementById("channels").append(box);
  }
  return box;
}

function addPost(p, fresh) {
  const list = channelBox(p.channel).querySelector("ol");
  const item = el("li", { class: fresh ? "fresh" : "", "data-id": String(p.id ?? "") },
    el("span", { class: "user", text: String(p.user ?? "?") + ":" }),
    document.createTextNode(String(p.message ?? "")));
  list.prepend(item);
  while (list.children.length > 20) list.lastChild.remove();
}

// -- demo --------------------------------------------------------------------------

function demo(action, name) {
  fetch(`api/demo/${encodeURIComponent(action)}/${encodeURIComponent(name)}`, { method: "POST" })
    .then((r) => r.json())
    .then((body) => addEvent({ at: Date.now() / 1000, kind: "demo",
      text: body.error ? `${action} ${name}: ${body.error}` : `${action} ${name}: ${body.result || "done"}` }))
    .catch((err) => addEvent({ at: Date.now() / 1000, kind: "demo", text: `${action} ${name}: ${err}` }));
}

// -- the stream --------------------------------------------------------------------

function connect() {
  const badge = document.getElementById("connection");
  const source = new EventSource("events");
  source.onopen = () => { badge.textContent = "live"; badge.className = "badge on"; };
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge off"; };
  source.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    state.topology = s.topology;
    state.history = s.history;
    for (const key of Object.keys(state.series)) state.series[key] = s.series[key] || {};
    document.getElementById("timeline").replaceChildren();
    s.timeline.forEach(addEvent);
    document.getElementById("channels").replaceChildren();
    for (const [name, posts] of Object.entries(s.channels)) {
      channelBox(name);
      posts.forEach((p) => addPost(p, false));
    }
    renderTopology(); redraw();
  });
  source.addEventListener("tick", (m) => {
    const t = JSON.parse(m.data);
    state.topology = t.topology;
    addPoints(t.points, t.topology.at);
    renderTopology(); redraw();
  });
  source.addEventListener("topology", (m) => { state.topology = JSON.parse(m.data); renderTopology(); });
  source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
  source.addEventListener("post", (m) => addPost(JSON.parse(m.data), true));
  source.addEventListener("channel", (m) => channelBox(JSON.parse(m.data).channel));
  source.addEventListener("private", (m) => {
    document.getElementById("private-count").textContent = String(JSON.parse(m.data).count);
  });
}

fetch("api/demo").then((r) => r.json()).then((d) => {
  state.demo = Boolean(d.demo);
  document.getElementById("demo-badge").hidden = !state.demo;
  renderTopology();
}).catch(() => {});
connect();
window.addEventListener("resize", redraw);
