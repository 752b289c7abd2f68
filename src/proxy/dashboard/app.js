// hoard dashboard: live request feed and counters (server-sent events from /events), the
// store summary (/api/store), stored URLs (/api/urls) with Purge (POST /api/purge).
// No libraries; everything is built with DOM APIs (no innerHTML of server data).
"use strict";

const MAX_ROWS = 200;       // feed rows kept
const HISTORY = 300;        // chart points (seconds)
const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
}
function pct(x) { return x == null ? "–" : (x * 100).toFixed(1) + "%"; }
function secs(s) {
  if (s == null) return "–";
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== String(text)) el.textContent = text;
}
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}
function outcomeClass(o) {
  if (o === "hit") return "hit";
  if (o === "uri-miss" || o === "miss" || o === "vary-miss") return "miss";
  if (o === "stale" || o === "request") return "stale";
  if (o === "bypass") return "bypass";
  return "other";
}
function hostOf(url) {
  try { return new URL(url).host; } catch (_) { return ""; }
}

// ---- request feed ----------------------------------------------------------
let paused = false;
let held = 0;
function matchesFilters(ev) {
  const h = $("f-host").value.trim().toLowerCase();
  const o = $("f-outcome").value;
  if (h && !hostOf(ev.url).toLowerCase().includes(h)) return false;
  if (o && outcomeClass(ev.outcome) !== o) return false;
  return true;
}
function addRow(ev) {
  if (paused) { held++; setText("feed-state", "paused: " + held + " requests not shown"); return; }
  const t = new Date(ev.time_ms);
  const tr = el("tr", { className: "o-" + outcomeClass(ev.outcome) });
  tr.dataset.outcome = ev.outcome;
  tr.dataset.url = ev.url;
  tr.hidden = !matchesFilters(ev);
  tr.append(
    el("td", {}, el("time", { dateTime: t.toISOString(), textContent: t.toLocaleTimeString() })),
    el("td", { textContent: ev.method }),
    el("td", { className: "url", textContent: ev.url }),
    el("td", { className: "num", textContent: ev.status }),
    el("td", { className: "cs", textContent: ev.cache_status || ev.outcome, title: ev.outcome }),
    el("td", { className: "num", textContent: bytes(ev.bytes) }),
    el("td", { className: "num", textContent: (ev.elapsed_us / 1000).toFixed(1) + " ms" }),
  );
  const body = $("feed").tBodies[0];
  body.prepend(tr);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}
$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (!paused) held = 0;
  setText("feed-state", paused ? "paused" : "");
});
$("feed-filters").addEventListener("submit", (e) => e.preventDefault());
function refilter() {
  for (const tr of $("feed").tBodies[0].rows) {
    tr.hidden = !matchesFilters({ url: tr.dataset.url, outcome: tr.dataset.outcome });
  }
}
$("f-host").addEventListener("input", refilter);
$("f-outcome").addEventListener("change", refilter);

// ---- counters and chart ----------------------------------------------------
const points = [];  // {rate, ratio}
let last = null;
function onTick(t) {
  setText("c-requests", t.requests);
  setText("c-hits", t.served.hits);
  setText("c-upstream", t.upstream_requests);
  setText("c-cache-bytes", bytes(t.served.cache_bytes));
  setText("c-origin-bytes", bytes(t.served.origin_bytes));
  const n = t.served.hits + t.served.misses;
  setText("c-ratio", n ? pct(t.served.hits / n) : "–");
  if (last) {
    const dt = Math.max((t.time_ms - last.time_ms) / 1000, 0.001);
    const rate = (t.requests - last.requests) / dt;
    const dh = t.served.hits - last.served.hits;
    const dm = t.served.misses - last.served.misses;
    points.push({ rate, ratio: dh + dm ? dh / (dh + dm) : null });
    while (points.length > HISTORY) points.shift();
    setText("c-rate", rate.toFixed(rate < 10 ? 1 : 0));
    draw();
  }
  last = t;
  if (t.dropped) setText("feed-state", t.dropped + " events dropped (the page fell behind)");
}
function draw() {
  const w = 600, h = 160, step = w / (HISTORY - 1);
  const peak = Math.max(1, ...points.map((p) => p.rate));
  const x0 = w - (points.length - 1) * step;
  const rate = points.map((p, i) => (x0 + i * step).toFixed(1) + "," + (h - 4 - (p.rate / peak) * (h - 8)).toFixed(1));
  const ratio = [];
  points.forEach((p, i) => {
    if (p.ratio != null) ratio.push((x0 + i * step).toFixed(1) + "," + (h - 4 - p.ratio * (h - 8)).toFixed(1));
  });
  $("line-rate").setAttribute("points", rate.join(" "));
  $("line-ratio").setAttribute("points", ratio.join(" "));
  setText("peak", peak.toFixed(peak < 10 ? 1 : 0) + "/s");
}

// ---- store summary -----------------------------------------------------------
async function loadStore() {
  try {
    const r = await fetch("api/store", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status);
    const s = await r.json();
    setText("s-entries", s.entries + " (" + s.urls + " URLs)");
    setText("s-size", bytes(s.bytes) + " of " + bytes(s.size_limit));
    setText("s-ratio", s.hit_ratio == null ? "–" : pct(s.hit_ratio) + " of " + (s.hits + s.misses));
    const ev = s.evictions;
    setText("s-evictions", (ev.culled + ev.expired) + " (" + ev.culled + " over the size limit, " + ev.expired + " expired)");
    const m = $("s-meter");
    m.value = s.size_limit ? s.bytes / s.size_limit : 0;
    m.textContent = pct(m.value);
    const body = $("hosts");
    body.replaceChildren(...s.top_hosts.map((h) => el("tr", {},
      el("td", { className: "url", textContent: h.host }),
      el("td", { className: "num", textContent: h.urls }),
      el("td", { className: "num", textContent: bytes(h.bytes) }))));
  } catch (e) {
    setText("s-entries", "unavailable");
  }
}

// ---- stored URLs and purge -------------------------------------------------------
let searchSeq = 0;  // answers of searches overtaken by a newer search or a purge are ignored
async function searchUrls() {
  const my = ++searchSeq;
  const q = new URLSearchParams({ q: $("u-q").value, host: $("u-host").value, limit: "50" });
  setText("url-state", "searching…");
  try {
    const r = await fetch("api/urls?" + q, { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const list = await r.json();
    if (my !== searchSeq) return;
    const body = $("urls").tBodies[0];
    body.replaceChildren(...list.urls.map(urlRow));
    setText("url-state", list.total + " stored URL" + (list.total === 1 ? "" : "s") +
      (list.total > list.urls.length ? ", first " + list.urls.length + " shown" : ""));
  } catch (e) {
    setText("url-state", "search failed: " + e.message);
  }
}
function urlRow(u) {
  const head = (u.status ?? "") + "\n" + u.headers.map(([k, v]) => k + ": " + v).join("\n");
  const details = el("details", {}, el("summary", { textContent: u.url }), el("pre", { textContent: head }));
  const purge = el("button", { type: "button", className: "purge", textContent: "Purge" });
  purge.dataset.url = u.url;
  purge.setAttribute("aria-label", "Purge " + u.url);
  purge.addEventListener("click", () => purgeUrl(u.url, purge));
  const tr = el("tr", {},
    el("td", { className: "url" }, details),
    el("td", { className: "num", textContent: u.status ?? "–" }),
    el("td", { className: "num", textContent: secs(u.age) }),
    el("td", { textContent: u.fresh == null ? "–" : u.fresh ? "fresh, " + secs(u.ttl) + " left" : "stale" }),
    el("td", { className: "num", textContent: u.variants + (u.vary.length ? " (Vary: " + u.vary.join(", ") + ")" : "") }),
    el("td", { className: "num", textContent: bytes(u.size) }),
    el("td", {}, purge));
  tr.dataset.url = u.url;
  return tr;
}
async function purgeUrl(url, button) {
  button.disabled = true;
  try {
    const r = await fetch("api/purge", {
      method: "POST",
      headers: { "X-Hoard-Purge": "1", "Content-Type": "text/plain" },
      body: url,
    });
    const res = await r.json().catch(() => ({}));
    if (r.ok) {
      searchSeq++;
      // The list may have been redrawn meanwhile: remove the URL's current row.
      const row = [...$("urls").tBodies[0].rows].find((r) => r.dataset.url === url);
      const next = row && (row.nextElementSibling || row.previousElementSibling);
      if (row) row.remove();
      setText("url-state", "purged " + url + " (" + res.removed + " rows)");
      // Keep keyboard focus in the list.
      const b = next && next.querySelector("button.purge");
      (b || $("u-q")).focus();
      loadStore();
    } else {
      button.disabled = false;
      setText("url-state", "purge failed: " + (res.error || "HTTP " + r.status));
    }
  } catch (e) {
    button.disabled = false;
    setText("url-state", "purge failed: " + e.message);
  }
}
$("url-search").addEventListener("submit", (e) => { e.preventDefault(); searchUrls(); });

// ---- event stream --------------------------------------------------------------
function connect() {
  const es = new EventSource("events");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "live"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; $("conn").className = ""; });
  es.addEventListener("access", (m) => { try { addRow(JSON.parse(m.data)); } catch (_) {} });
  es.addEventListener("tick", (m) => { try { onTick(JSON.parse(m.data)); } catch (_) {} });
}
connect();
loadStore();
searchUrls();
setInterval(loadStore, 10000);
