"""The HTML, CSS and JavaScript of the graph page (nxrun/views/graph_page.py fills in the data).

Written for this project, no third-party code: plain SVG drawn from one string of markup (fast at
thousands of nodes), pan and zoom by one transform, highlights by CSS classes. The page loads
nothing: a Content-Security-Policy forbids every request.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
:root { --bg:#fafafa; --fg:#212121; --muted:#757575; --line:#b0bec5; --panel:#ffffff; --accent:#3949ab; }
* { box-sizing: border-box; }
html, body { margin:0; height:100%; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
body { display:flex; flex-direction:column; }
header { display:flex; flex-wrap:wrap; gap:8px 14px; align-items:center; padding:8px 12px; background:#263238; color:#eceff1; }
header h1 { font-size:15px; margin:0 8px 0 0; font-weight:600; }
header label { display:flex; gap:4px; align-items:center; }
header select, header input[type=search] { font:inherit; padding:2px 4px; border-radius:4px; border:1px solid #546e7a; background:#37474f; color:#eceff1; }
header input[type=search] { width:180px; }
header button { font:inherit; padding:2px 10px; border-radius:4px; border:1px solid #546e7a; background:#455a64; color:#eceff1; cursor:pointer; }
#legend { display:flex; gap:6px; flex-wrap:wrap; }
.chip { display:inline-flex; align-items:center; gap:4px; padding:1px 8px; border-radius:10px; background:#37474f; cursor:pointer; user-select:none; }
.chip.off { opacity:.4; }
.swatch { width:10px; height:10px; border-radius:2px; display:inline-block; border:1px solid #0003; }
#affected-banner { padding:4px 12px; background:#fff3e0; color:#e65100; border-bottom:1px solid #ffcc80; display:none; }
main { flex:1; display:flex; min-height:0; }
#canvas { flex:1; position:relative; min-width:0; }
svg#graph { width:100%; height:100%; display:block; cursor:grab; background:var(--bg); }
svg#graph.panning { cursor:grabbing; }
.lane rect { fill:#eceff1; }
.lane:nth-child(2n) rect { fill:#e3e8eb; }
.lane text { fill:#546e7a; font-size:12px; font-weight:600; }
.edge { fill:none; stroke:var(--line); stroke-width:1.2; }
.node { cursor:pointer; }
.node rect { stroke-width:1.4; }
.node text { font-size:11.5px; fill:#212121; pointer-events:none; }
.node .mark { fill:#e65100; }
.st-local-hit rect { fill:#c8e6c9; stroke:#2e7d32; }
.st-remote-hit rect { fill:#b3e5fc; stroke:#0277bd; }
.st-miss rect { fill:#ffe082; stroke:#f57f17; }
.st-failed rect { fill:#ffcdd2; stroke:#c62828; }
.st-skipped rect { fill:#eeeeee; stroke:#9e9e9e; }
.st-never rect { fill:#ffffff; stroke:#9e9e9e; stroke-dasharray:4 3; }
.st-aggregate rect { fill:#ede7f6; stroke:#7e57c2; stroke-dasharray:4 3; }
.dim { opacity:.12; }
.node.affected rect { stroke:#ff6d00; stroke-width:3; }
.node.selected rect { stroke:#1a237e; stroke-width:3.2; }
.node.ancestor rect { stroke:#5e35b1; stroke-width:2.6; }
.node.descendant rect { stroke:#00897b; stroke-width:2.6; }
.edge.ancestor { stroke:#5e35b1; stroke-width:2; }
.edge.descendant { stroke:#00897b; stroke-width:2; }
.edge.hidden-edge { display:none; }
#details { width:min(460px, 42vw); overflow:auto; background:var(--panel); border-left:1px solid #cfd8dc; padding:10px 14px; }
#details h2 { font-size:15px; margin:4px 0 6px; word-break:break-all; }
#details h3 { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:14px 0 4px; }
#details pre, #details code { font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
#details pre { background:#f5f5f5; padding:6px 8px; border-radius:4px; white-space:pre-wrap; word-break:break-all; margin:0; }
#details table { border-collapse:collapse; width:100%; }
#details td, #details th { padding:1px 6px 1px 0; vertical-align:top; text-align:left; }
#details td.num { text-align:right; font-variant-numeric:tabular-nums; }
#details .component td:first-child { word-break:break-all; }
#details .component.changed td { color:#bf360c; font-weight:600; }
.badge { display:inline-block; padding:0 8px; border-radius:9px; font-size:12px; border:1px solid #0002; }
.muted { color:var(--muted); }
.change-added { color:#2e7d32; } .change-removed { color:#c62828; } .change-changed { color:#bf360c; }
#help { position:absolute; left:10px; bottom:8px; color:var(--muted); font-size:11.5px; background:#fafafacc; padding:2px 6px; border-radius:4px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <label>find <input type="search" id="search" placeholder="task id (Enter: select)"></label>
  <label>project <select id="filter-project"><option value="">all</option></select></label>
  <label>target <select id="filter-target"><option value="">all</option></select></label>
  <label>status <select id="filter-status"><option value="">all</option></select></label>
  <label title="On selecting a task, highlight what it depends on and what depends on it"><input type="checkbox" id="lineage" checked> ancestors / descendants</label>
  <label id="affected-toggle" style="display:none"><input type="checkbox" id="show-affected" checked> affected</label>
  <button id="fit" type="button">fit</button>
  <div id="legend"></div>
</header>
<div id="affected-banner"></div>
<main>
  <div id="canvas">
    <svg id="graph" xmlns="http://www.w3.org/2000/svg"><g id="viewport"><g id="lanes"></g><g id="edges"></g><g id="nodes"></g></g></svg>
    <div id="help">drag to pan · wheel to zoom · click a task for its ETag and why it ran · Esc clears</div>
  </div>
  <aside id="details"><p class="muted">Click a task to see its command, ETag, each ETag component and what changed since the previous run.</p></aside>
</main>
<script>
"use strict";
const DATA = /*NXRUN_DATA*/null;
const STATUS = {
  "local-hit": ["local hit", "#c8e6c9"], "remote-hit": ["remote hit", "#b3e5fc"], "miss": ["ran", "#ffe082"],
  "failed": ["failed", "#ffcdd2"], "skipped": ["skipped", "#eeeeee"], "never": ["never run", "#ffffff"],
  "aggregate": ["aggregate", "#ede7f6"],
};
const T = DATA.tasks, L = DATA.layout;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"})[c]);
const children = T.map(() => []);
const edges = [];
T.forEach((t, i) => t.deps.forEach((d) => { children[d].push(i); edges.push([d, i]); }));
const affected = new Set(DATA.affected ? DATA.affected.tasks : []);
let selected = -1;

function label(t) {
  let text = t.id.startsWith(t.project + ":") ? t.id.slice(t.project.length + 1) : t.id;
  return text.length > 32 ? text.slice(0, 31) + "…" : text;
}
function stale(t) { return t.current && t.last && t.current.etag !== t.last.etag; }

function draw() {
  $("title").textContent = "nxrun · " + DATA.workspace + " · " + T.length + " tasks";
  const maxX = Math.max(0, ...T.map((t) => t.x)) + L.node_width + 40;
  $("lanes").innerHTML = DATA.lanes.map((l) =>
    `<g class="lane"><rect x="-150" y="${l.y}" width="${maxX + 150}" height="${l.height}" rx="6"></rect>` +
    `<text x="-140" y="${l.y + 16}">${esc(l.project)}</text></g>`).join("");
  const h = L.node_height / 2;
  $("edges").innerHTML = edges.map(([a, b]) => {
    const s = T[a], e = T[b], x1 = s.x + L.node_width, y1 = s.y + h, x2 = e.x, y2 = e.y + h, mx = (x1 + x2) / 2;
    return `<path class="edge" d="M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}"></path>`;
  }).join("");
  $("nodes").innerHTML = T.map((t, i) =>
    `<g class="node st-${t.status}${affected.has(i) ? " affected" : ""}" data-i="${i}" data-id="${esc(t.id)}" data-status="${t.status}" transform="translate(${t.x},${t.y})">` +
    `<title>${esc(t.id)} · ${esc((STATUS[t.status] || [t.status])[0])}${stale(t) ? " · changed since its last run" : ""}</title>` +
    `<rect width="${L.node_width}" height="${L.node_height}" rx="5"></rect><text x="8" y="16">${esc(label(t))}</text>` +
    (stale(t) ? `<circle class="mark" cx="${L.node_width - 9}" cy="${h}" r="4"></circle>` : "") + `</g>`).join("");
}
const nodeEls = () => $("nodes").children;
const edgeEls = () => $("edges").children;

// ---- filters ------------------------------------------------------------------------------
function fillFilters() {
  const add = (select, values, names) => values.forEach((v) => {
    const o = document.createElement("option"); o.value = v; o.textContent = names ? names(v) : v; select.appendChild(o);
  });
  add($("filter-project"), [...new Set(T.map((t) => t.project))].sort());
  add($("filter-target"), [...new Set(T.map((t) => t.target))].sort());
  const present = Object.keys(STATUS).filter((s) => T.some((t) => t.status === s));
  add($("filter-status"), present, (s) => STATUS[s][0]);
  $("legend").innerHTML = present.map((s) =>
    `<span class="chip" data-status="${s}"><span class="swatch" style="background:${STATUS[s][1]}"></span>${STATUS[s][0]} ${T.filter((t) => t.status === s).length}</span>`).join("");
  for (const chip of $("legend").children) chip.addEventListener("click", () => {
    const s = chip.dataset.status; $("filter-status").value = $("filter-status").value === s ? "" : s; refresh(); fit();
  });
  if (DATA.affected) {
    $("affected-toggle").style.display = "";
    const banner = $("affected-banner"); banner.style.display = "block";
    banner.textContent = `${DATA.affected.tasks.length} task(s) affected by ${DATA.affected.changed_count} changed file(s) since ${DATA.affected.base}` +
      (DATA.affected.changed_files.length ? ": " + DATA.affected.changed_files.slice(0, 12).join(", ") + (DATA.affected.changed_count > 12 ? ", …" : "") : "");
  }
}
function matches(t) {
  const p = $("filter-project").value, g = $("filter-target").value, s = $("filter-status").value;
  const q = $("search").value.trim().toLowerCase();
  return (!p || t.project === p) && (!g || t.target === g) && (!s || t.status === s) && (!q || t.id.toLowerCase().includes(q));
}
function lineage(root, next) {
  const seen = new Set(), stack = [root];
  while (stack.length) for (const j of next(stack.pop())) if (!seen.has(j)) { seen.add(j); stack.push(j); }
  return seen;
}
function refresh() {
  const nodes = nodeEls(), lines = edgeEls();
  const filtered = T.map(matches);
  const useLineage = selected >= 0 && $("lineage").checked;
  const up = useLineage ? lineage(selected, (i) => T[i].deps) : new Set();
  const down = useLineage ? lineage(selected, (i) => children[i]) : new Set();
  const showAffected = DATA.affected && $("show-affected").checked;
  T.forEach((t, i) => {
    const c = nodes[i].classList;
    const inFocus = !useLineage || i === selected || up.has(i) || down.has(i);
    c.toggle("dim", !filtered[i] || !inFocus || (showAffected && !affected.has(i) && !useLineage));
    c.toggle("selected", i === selected);
    c.toggle("ancestor", up.has(i));
    c.toggle("descendant", down.has(i));
    c.toggle("affected", !!showAffected && affected.has(i));
  });
  edges.forEach(([a, b], k) => {
    const c = lines[k].classList;
    const isUp = up.has(a) && (up.has(b) || b === selected), isDown = (down.has(a) || a === selected) && down.has(b);
    c.toggle("ancestor", isUp); c.toggle("descendant", isDown);
    c.toggle("dim", !filtered[a] || !filtered[b] || (useLineage && !isUp && !isDown));
  });
}

// ---- details panel -----------------------------------------------------------------------
const fmtTime = (s) => s ? new Date(s * 1000).toLocaleString() : "–";
const fmtNum = (v) => v == null ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toPrecision(3);
const changeList = (changes) => changes.length ? "<table>" + changes.map(([name, kind]) =>
  `<tr class="change"><td class="change-${kind}">${kind}</td><td><code>${esc(name)}</code></td></tr>`).join("") + "</table>" : "";

function why(t) {
  if (t.aggregate) return `<p class="muted">An aggregate: it runs nothing; it stands for its dependencies.</p>`;
  if (!t.last) return `<p>Never run in this workspace's history${t.current ? `; it will run (ETag <code>${esc(t.current.etag.slice(0, 16))}</code>)` : ""}.</p>`;
  const parts = [];
  const st = t.status;
  if (st === "local-hit" || st === "remote-hit") {
    parts.push(`<p>Restored from the ${st === "remote-hit" ? "remote" : "local"} cache${t.last.origin && t.last.origin !== "local" && t.last.origin !== "remote" ? ` (${esc(t.last.origin)})` : ""}: its ETag matched a stored result, saving ${t.last.saved.toFixed(2)} s.</p>`);
  } else if (st === "miss") {
    parts.push(`<p>Ran: no cached result for its ETag.</p>`);
  } else if (st === "failed") {
    parts.push(`<p>Failed: ${esc(t.last.error || "non-zero exit")}</p>`);
  } else if (st === "skipped") {
    parts.push(`<p>Skipped: ${esc(t.last.error || "a dependency failed")}</p>`);
  }
  if (t.changes) {
    parts.push(t.changes.length
      ? `<p>${t.changes.length} component(s) changed since the previous run (run ${t.previous.run}, ${esc(t.previous.status)}, ETag <code>${esc(t.previous.etag.slice(0, 16))}</code>):</p>` + changeList(t.changes)
      : `<p class="muted">Same ETag as the previous run (run ${t.previous.run}).</p>`);
  }
  if (t.current) {
    if (t.current.etag === t.last.etag) {
      const upstream = [...lineage(T.indexOf(t), (i) => T[i].deps)].filter((j) => stale(T[j]));
      parts.push(`<p class="muted">No input changed on disk since its last run (upstream outputs as they are now): the next run ${t.current.cached ? "restores it" : "runs it (not cached)"}` +
        (upstream.length ? `, unless the upstream task(s) that changed (${upstream.slice(0, 5).map((j) => esc(T[j].id)).join(", ")}${upstream.length > 5 ? ", …" : ""}) write different outputs.</p>` : ".</p>"));
    }
    else parts.push(`<p><b>Changed on disk since its last run</b> — the next run ${t.current.cached ? "restores it from the cache" : "executes it"} (ETag <code>${esc(t.current.etag.slice(0, 16))}</code>):</p>` + changeList(t.current.changes));
  }
  return parts.join("");
}
function bench(t) {
  const b = t.bench;
  if (!b) return "";
  const rows = Object.entries(b.values).sort((x, y) => y[1] - x[1]).map(([series, value]) =>
    `<tr class="bench-row"><td>${esc(series)}${b.baselines.includes(series) ? ' <span class="muted">(baseline)</span>' : ""}</td><td class="num">${fmtNum(value)}</td></tr>`).join("");
  return `<h3>Benchmark</h3><p>${esc(b.metric)} at <code>${esc(b.case || "-")}</code>${b.device ? " on " + esc(b.device) : ""}` +
    (b.time ? `, ${fmtTime(b.time)}` : "") + `</p><table>${rows}</table>`;
}
function components(t) {
  if (!t.components) return "";
  const changed = new Set([...(t.changes || []), ...((t.current && t.current.changes) || [])].map((c) => c[0]));
  const names = Object.keys(t.components);
  const rows = names.sort((a, b) => (changed.has(b) - changed.has(a)) || (a < b ? -1 : 1)).map((name) =>
    `<tr class="component${changed.has(name) ? " changed" : ""}" data-name="${esc(name)}"><td><code>${esc(name)}</code></td><td><code>${esc(t.components[name])}</code></td></tr>`).join("");
  return `<h3>ETag components (${names.length})</h3><table id="components">${rows}</table>`;
}
function showDetails(i) {
  const t = T[i];
  const status = STATUS[t.status] || [t.status, "#fff"];
  const link = (j) => `<a href="#" data-goto="${j}">${esc(T[j].id)}</a>`;
  $("details").innerHTML =
    `<h2 id="detail-id">${esc(t.id)}</h2>` +
    `<p><span class="badge" id="detail-status" style="background:${status[1]}">${esc(status[0])}</span> <span class="muted">${esc(t.source)}</span></p>` +
    (t.description ? `<p>${esc(t.description)}</p>` : "") +
    `<h3>Why</h3>${why(t)}` +
    `<h3>Command</h3><pre id="detail-command">${esc(t.command || "(aggregate)")}</pre>` +
    `<h3>ETag</h3><p><code id="detail-etag">${esc(t.last && t.last.etag || (t.current && t.current.etag) || "–")}</code>` +
    (t.current && t.last && t.current.etag !== t.last.etag ? `<br><span class="muted">now:</span> <code>${esc(t.current.etag)}</code>` : "") + `</p>` +
    (t.last ? `<table><tr><td>last run</td><td>#${t.last.run}, ${fmtTime(t.last.time)}</td></tr>` +
      `<tr><td>duration</td><td>${t.last.duration.toFixed(2)} s${t.last.saved ? ` (saved ${t.last.saved.toFixed(2)} s)` : ""}</td></tr>` +
      `<tr><td>cache</td><td>${esc(t.cache)}</td></tr></table>` : "") +
    bench(t) +
    `<h3>Outputs</h3>${t.outputs.length ? "<pre>" + t.outputs.map(esc).join("\n") + "</pre>" : '<p class="muted">none</p>'}` +
    `<h3>Depends on</h3><p>${t.deps.map(link).join(", ") || '<span class="muted">nothing</span>'}</p>` +
    `<h3>Needed by</h3><p>${children[i].map(link).join(", ") || '<span class="muted">nothing</span>'}</p>` +
    components(t);
  for (const a of $("details").querySelectorAll("a[data-goto]")) a.addEventListener("click", (e) => { e.preventDefault(); select(+a.dataset.goto, true); });
}
function select(i, center) {
  selected = i;
  if (i >= 0) showDetails(i);
  if (i >= 0 && center) centerOn(i);
  refresh();
}

// ---- pan and zoom ------------------------------------------------------------------------
const view = { k: 1, x: 0, y: 0 };
function apply() { $("viewport").setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`); }
function fit() {
  // the tasks the filters leave (all of them when none is set)
  const shown = T.filter(matches);
  const box = shown.length && shown.length < T.length ? shown : T;
  const svg = $("graph").getBoundingClientRect();
  let minX = Math.min(...box.map((t) => t.x)) - 20, maxX = Math.max(...box.map((t) => t.x)) + L.node_width + 20;
  let minY = Math.min(...box.map((t) => t.y)) - 20, maxY = Math.max(...box.map((t) => t.y)) + L.node_height + 20;
  if (box === T) minX -= 140;
  view.k = Math.min(1.4, Math.max(0.02, Math.min(svg.width / (maxX - minX), svg.height / (maxY - minY))));
  view.x = (svg.width - (maxX - minX) * view.k) / 2 - minX * view.k;
  view.y = Math.max(10, (svg.height - (maxY - minY) * view.k) / 2) - minY * view.k;
  apply();
}
function centerOn(i) {
  const svg = $("graph").getBoundingClientRect(), t = T[i];
  view.k = Math.max(view.k, 0.8);
  view.x = svg.width / 2 - (t.x + L.node_width / 2) * view.k;
  view.y = svg.height / 2 - (t.y + L.node_height / 2) * view.k;
  apply();
}
function wire() {
  const svg = $("graph");
  let drag = null, moved = false;
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const k = Math.min(4, Math.max(0.02, view.k * Math.exp(-e.deltaY * 0.0015)));
    view.x = px - (px - view.x) * k / view.k; view.y = py - (py - view.y) * k / view.k; view.k = k; apply();
  }, { passive: false });
  svg.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y }; moved = false; });
  window.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) { moved = true; svg.classList.add("panning"); }
    if (moved) { view.x = drag.vx + e.clientX - drag.x; view.y = drag.vy + e.clientY - drag.y; apply(); }
  });
  window.addEventListener("pointerup", () => { drag = null; svg.classList.remove("panning"); });
  svg.addEventListener("click", (e) => {
    if (moved) return;
    const node = e.target.closest(".node");
    select(node ? +node.dataset.i : -1, false);
    if (!node) $("details").innerHTML = '<p class="muted">Click a task to see its command, ETag, each ETag component and what changed since the previous run.</p>';
  });
  for (const id of ["lineage", "show-affected"]) $(id).addEventListener("change", refresh);
  for (const id of ["filter-project", "filter-target", "filter-status"]) $(id).addEventListener("change", () => { refresh(); fit(); });
  $("search").addEventListener("input", refresh);
  $("search").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const q = $("search").value.trim().toLowerCase();
    const i = T.findIndex((t) => t.id.toLowerCase() === q || t.id.toLowerCase().includes(q));
    if (i >= 0) select(i, true);
  });
  window.addEventListener("keydown", (e) => { if (e.key === "Escape") { select(-1); } });
  $("fit").addEventListener("click", fit);
  window.addEventListener("resize", fit);
}

draw(); fillFilters(); wire(); fit(); refresh();
document.body.dataset.ready = "1";
window.nxrunGraph = { data: DATA, select: (id) => select(T.findIndex((t) => t.id === id), true) };
</script>
</body>
</html>
"""
