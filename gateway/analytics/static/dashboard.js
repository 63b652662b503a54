"use strict";
// The analytics dashboard: applications and their output rows arrive as server-sent events from
// /analytics/events ("stats" every second or on change, "rows" as queries emit them) and are drawn
// as time series on plain <canvas> elements (no chart library, nothing from a CDN).

const COLORS = ["#2a5", "#fc6", "#9cf", "#e77", "#c9f", "#6cc", "#f9c", "#aaa"];
const MAX_POINTS = 600;   // per series
const MAX_SERIES = 8;     // per query chart
const WINDOW_COLUMNS = ["window_start", "window_end", "window_time"];
const TIMESTAMP = /^\d{4}-\d\d-\d\d[ T]\d\d:\d\d/;
const state = { apps: [], selected: null, series: {}, rows: {}, stats: {}, drawn: {}, events: 0 };
window.dashboard = state;  // for tests and curious users

const $ = (id) => document.getElementById(id);

function log(message) {
  const box = $("log");
  box.textContent = `${new Date().toISOString().slice(11, 19)} ${message}\n` + box.textContent.slice(0, 4000);
}

function parseTime(text) {
  // DuckDB writes TIMESTAMPs as "2024-01-02 03:04:05[.ffffff]" (UTC)
  const t = Date.parse(String(text).replace(" ", "T") + "Z");
  return Number.isNaN(t) ? null : t;
}

// -- data ---------------------------------------------------------------------------------------

function addRows(app, query, rows) {
  const key = `${app}/${query}`;
  const all = state.series[key] || (state.series[key] = {});
  const recent = state.rows[key] || (state.rows[key] = []);
  for (const row of rows) {
    let x = parseTime(row.window_end ?? "");
    const labels = [];
    const values = [];
    for (const [name, value] of Object.entries(row)) {
      if (WINDOW_COLUMNS.includes(name)) continue;
      if (typeof value === "number") values.push([name, value]);
      else if (typeof value === "string" && TIMESTAMP.test(value)) x = x ?? parseTime(value);  // a time, not a series label
      else if (value !== null && typeof value !== "object") labels.push(String(value));
    }
    x = x ?? Date.now();
    for (const [name, value] of values) {
      const series = labels.length ? `${name} ${labels.join(" ")}` : name;
      if (!all[series] && Object.keys(all).length >= MAX_SERIES) continue;
      const points = all[series] || (all[series] = []);
      points.push([x, value]);
      if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
    }
    recent.unshift(row);
  }
  recent.splice(10);
}

function addStats(summaries) {
  const now = Date.now();
  state.apps = summaries;
  for (const app of summaries) {
    const s = state.stats[app.ApplicationName] || (state.stats[app.ApplicationName] = { "records/s": [], "lag s": [] });
    s["records/s"].push([now, app.RecordsPerSecond]);
    s["lag s"].push([now, app.InputLagMillis / 1000]);
    for (const points of Object.values(s)) if (points.length > MAX_POINTS) points.shift();
  }
  if (!state.selected && summaries.length) select(summaries[0].ApplicationName);
}

// -- drawing ------------------------------------------------------------------------------------

function drawChart(canvas, seriesMap) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(width * ratio)) { canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const entries = Object.entries(seriesMap).filter(([, p]) => p.length);
  let drawn = 0;
  if (!entries.length) {
    ctx.fillStyle = "#666"; ctx.font = "12px system-ui"; ctx.fillText("no data yet", 10, 20);
    return drawn;
  }
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [, points] of entries) for (const [x, y] of points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (x1 === x0) { x0 -= 1000; x1 += 1000; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const pad = { left: 48, right: 8, top: 8, bottom: 18 };
  const px = (x) => pad.left + (x - x0) / (x1 - x0) * (width - pad.left - pad.right);
  const py = (y) => height - pad.bottom - (y - y0) / (y1 - y0) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "#333"; ctx.fillStyle = "#888"; ctx.font = "11px system-ui"; ctx.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const y = y0 + (y1 - y0) * i / 3;
    ctx.beginPath(); ctx.moveTo(pad.left, py(y)); ctx.lineTo(width - pad.right, py(y)); ctx.stroke();
    ctx.fillText(y.toPrecision(4), 2, py(y) + 4);
  }
  ctx.fillText(new Date(x0).toISOString().slice(11, 19), pad.left, height - 4);
  const endLabel = new Date(x1).toISOString().slice(11, 19);
  ctx.fillText(endLabel, width - pad.right - ctx.measureText(endLabel).width, height - 4);
  entries.forEach(([, points], i) => {
    ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([x, y], j) => (j ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
    for (const [x, y] of points) ctx.fillRect(px(x) - 1.5, py(y) - 1.5, 3, 3);
    drawn += points.length;
  });
  return drawn;
}

function legend(seriesMap) {
  return Object.keys(seriesMap).map((name, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${escapeHtml(name)}</span>`).join("");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

function render() {
  const list = $("apps");
  const listed = JSON.stringify([state.selected, state.apps.map((a) => [a.ApplicationName, a.ApplicationStatus])]);
  if (list.dataset.listed !== listed) {  // rebuilt only when it changes: a click never lands on a stale button
    list.dataset.listed = listed;
    list.replaceChildren(...state.apps.map((app) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.innerHTML = `${escapeHtml(app.ApplicationName)} <span class="state ${app.ApplicationStatus}">${app.ApplicationStatus}</span>`;
      button.classList.toggle("active", app.ApplicationName === state.selected);
      button.addEventListener("click", () => select(app.ApplicationName));
      li.append(button);
      return li;
    }));
  }
  const app = state.apps.find((a) => a.ApplicationName === state.selected);
  if (!app) return;
  $("app-name").textContent = app.ApplicationName;
  $("app-status").textContent = app.ApplicationStatus + (app.Message ? `: ${app.Message}` : "");
  const watermarks = app.Inputs.map((i) => `${escapeHtml(i.Table)} ${escapeHtml(i.Watermark ?? "-")}`).join(", ");
  $("stats").innerHTML = `<span>records in <b>${app.RecordsIn}</b></span><span>records/s <b>${app.RecordsPerSecond}</b></span>` +
    `<span>input lag <b>${(app.InputLagMillis / 1000).toFixed(1)} s</b></span>` +
    `<span class="${app.Malformed ? "bad" : ""}">malformed <b>${app.Malformed}</b></span>` +
    `<span class="${app.Late ? "bad" : ""}">late <b>${app.Late}</b></span><span>watermark <b>${watermarks}</b></span>`;
  state.drawn.stats = drawChart($("chart-stats"), state.stats[app.ApplicationName] || {});
  $("legend-stats").innerHTML = legend(state.stats[app.ApplicationName] || {});
  const box = $("queries");
  for (const query of app.Queries) {
    const key = `${app.ApplicationName}/${query.Name}`;
    const id = `q-${app.ApplicationName}-${query.Name}`;
    let card = document.getElementById(id);
    if (!card) {
      card = document.createElement("div");
      card.className = "card";
      card.id = id;
      card.innerHTML = `<div class="card-title"></div><canvas class="chart"></canvas><div class="legend"></div><table class="rows"></table>`;
      box.append(card);
    }
    const where = [query.Window ? query.Window : "per record", query.OutputStream ? `to ${escapeHtml(query.OutputStream)}` : ""].join(" ");
    card.querySelector(".card-title").innerHTML = `<code>${escapeHtml(query.Name)}</code> ${where} · ${query.Outputs} rows`;
    const seriesMap = state.series[key] || {};
    state.drawn[query.Name] = drawChart(card.querySelector("canvas"), seriesMap);
    card.querySelector(".legend").innerHTML = legend(seriesMap);
    const rows = state.rows[key] || [];
    const columns = rows.length ? Object.keys(rows[0]) : [];
    card.querySelector("table").innerHTML = rows.length ? `<tr>${columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr>` +
      rows.map((r) => `<tr>${columns.map((c) => `<td>${escapeHtml(r[c] ?? "")}</td>`).join("")}</tr>`).join("") : "";
  }
}

function select(name) {
  if (state.selected === name) return;
  state.selected = name;
  $("queries").replaceChildren();
  render();
}

// -- events -------------------------------------------------------------------------------------

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function connect() {
  const source = new EventSource("/analytics/events");
  source.addEventListener("open", () => {
    // the server starts every connection with its recent rows: drop ours so none is drawn twice
    state.series = {};
    state.rows = {};
    $("status").textContent = "live";
    $("status").classList.remove("error");
  });
  source.addEventListener("error", async () => {
    $("status").textContent = "reconnecting...";
    $("status").classList.add("error");
    const response = await fetch("/analytics/applications", { cache: "no-store" }).catch(() => null);
    if (response && response.status === 403) {  // the gateway verifies SigV4: no unsigned stream data here
      source.close();
      $("status").textContent = (await response.json()).message;
    }
  });
  source.addEventListener("stats", (event) => { state.events++; addStats(JSON.parse(event.data)); scheduleRender(); });
  source.addEventListener("rows", (event) => {
    state.events++;
    const data = JSON.parse(event.data);
    addRows(data.application, data.query, data.rows);
    scheduleRender();
  });
}

// Motion detectors ([[analytics.motion]]): each links to the player, which shows the periods.
async function loadMotion() {
  const response = await fetch("/analytics/motion", { cache: "no-store" }).catch(() => null);
  if (!response || !response.ok) return;
  const detectors = (await response.json()).MotionDetectors;
  state.motion = detectors;
  $("motion").replaceChildren(...detectors.map((d) => {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/player?stream=${encodeURIComponent(d.VideoStream)}`;
    const open = d.Periods.some((p) => p.EndMillis === null) ? " (moving now)" : "";
    link.textContent = `${d.VideoStream}: ${d.Periods.length} periods${open}`;
    li.append(link);
    return li;
  }));
  if (!detectors.length) $("motion").textContent = "none configured";
}

window.addEventListener("resize", scheduleRender);
connect();
loadMotion();
setInterval(loadMotion, 5000);
