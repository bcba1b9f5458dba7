// netdissect paint: the page's client. No framework, no build step, no request off this server.
// The server's API (served schema: /openapi.json) is called only through API below.
"use strict";

const API = {
  info: { method: "GET", path: "/api/info" },
  concepts: { method: "GET", path: "/api/concepts" },
  samples: { method: "GET", path: "/api/samples" },
  render: { method: "POST", path: "/api/render" },
};

// stroke colours of the palette's concepts (by position), distinct from each other
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
  "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#000075"];
// a concept with a colour of its own strokes in it: the color segmenter's "red-c", ..., and the synthetic
// world's objects and materials in the colours its scenes paint them (netdissect/data/synth/scenes.py)
const WORLD = { sky: "#78aee6", cloud: "#eef0f5", sun: "#f5d23c", mountain: "#7d7468", grass: "#50963a",
  road: "#5f5f64", water: "#2d5fa5", sand: "#dcc896", wall: "#aa4632", floor: "#a0825a", house: "#b4503c",
  tree: "#2e7a32", car: "#c83c3c", boat: "#f2f2f2", person: "#e0a37a", fence: "#8c6a46", lamp: "#f7e08a",
  table: "#8b5a2b", cabinet: "#7a5230", wood: "#8c5f37", brick: "#aa4632", glass: "#96c8dc", metal: "#a0a5af",
  foliage: "#3c8232", fabric: "#b45a8c", asphalt: "#505055", stone: "#828278", roof: "#8a3a2a",
  door: "#6b4a2a", window: "#bcd8ec", trunk: "#6e4b2d", crown: "#2e7a32" };
const NAMED = { "black-c": "#111111", "blue-c": "#1f5fe0", "brown-c": "#8b5a2b", "green-c": "#1fae3a",
  "grey-c": "#8a8f96", "orange-c": "#f58a1f", "pink-c": "#f58cc8", "purple-c": "#8e3bc2", "red-c": "#e0201b",
  "white-c": "#f4f4f4", "yellow-c": "#f2d21b" };
const BATCH = 12;

const state = {
  info: null, concepts: [], concept: null, seed: null, first: 0,
  strokes: [], redo: [], mode: "draw", brush: 16, nUnits: 20, strength: 1, hover: null,
  lastEdits: [], cursor: [0, 0], renderSeq: 0, shownSeq: 0, renders: 0,
};

const $ = (id) => document.getElementById(id);
let maskCanvas, maskCtx, drawing = null;

// ------------------------------------------------------------------ requests
async function call(name, { query = null, body = null } = {}) {
  const api = API[name];
  let url = api.path;
  if (query) url += "?" + new URLSearchParams(query).toString();
  const init = { method: api.method, headers: {} };
  if (body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new Error(`the server did not answer (${e.message}); is netdissect paint still running?`);
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const why = data && data.detail ? data.detail : `${res.status} ${res.statusText}`;
    throw new Error(why);
  }
  return data;
}

// the body of POST /api/render (RenderRequest in the schema): the whole stroke stack
function renderBody(seed, strokes) {
  return {
    seed: seed,
    strokes: strokes.map((s) => {
      const out = { concept: s.concept, mode: s.mode, mask: s.mask, n_units: s.n_units };
      if (s.mode === "draw") out.strength = s.strength;
      return out;
    }),
  };
}

function showError(text) {
  const m = $("message");
  if (!text) { m.hidden = true; m.textContent = ""; return; }
  m.hidden = false;
  m.textContent = text;
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    const [info, concepts] = await Promise.all([call("info"), call("concepts")]);
    state.info = info;
    state.concepts = concepts.map((c, i) => ({ ...c, stroke: ownColor(c.name) || COLORS[i % COLORS.length] }));
  } catch (e) {
    showError(`Cannot start: ${e.message}`);
    return;
  }
  const [h, w] = state.info.image_size;
  maskCanvas = document.createElement("canvas");
  maskCanvas.width = w; maskCanvas.height = h;
  maskCtx = maskCanvas.getContext("2d");
  $("seed-input").max = String(state.info.limits.max_seed);
  state.nUnits = state.info.max_units;
  // the default brush is two cells of the layer wide: a stroke across the image covers whole cells
  // (the mask is max-pooled to the layer's grid, so every touched cell is switched)
  const cell = cellSize();
  const brush = $("brush");
  brush.max = String(Math.max(24, Math.round(6 * cell)));
  brush.value = String(Math.max(1, Math.round(2 * cell)));
  state.brush = Number(brush.value);
  $("brush-out").textContent = brush.value;
  showBrushCells();
  if (state.info.value_policy) $("value-policy").title = `insertion value: the ${state.info.value_policy}`;
  fillMeta();
  fillPalette();
  bindControls();
  // start on the first concept that measurably draws (the first one if none was measured)
  if (state.concepts.length) selectConcept(Math.max(0, state.concepts.findIndex((c) => !c.drawing || c.drawing.draws)));
  await loadBatch(0);
  if (state.seed === null) await openSeed(0);
}

function ownColor(name) {
  const short = String(name).split("/").pop();
  return NAMED[short] || WORLD[short] || null;
}

function cellSize() {   // image pixels per cell of the layer (the larger side)
  const [h, w] = state.info.image_size, [gh, gw] = state.info.grid;
  return Math.max(h / gh, w / gw);
}

function showBrushCells() {
  const cells = state.brush / cellSize();
  $("brush-cells").textContent = `(${state.brush} px = ${cells.toFixed(1)} cells of the ${state.info.grid[0]}×${state.info.grid[1]} layer)`;
}

function paletteOverflow() {   // a visible sign that the list scrolls, and how many concepts lie below
  const box = $("palette"), more = $("palette-more");
  const hiddenBelow = box.scrollHeight - box.clientHeight - box.scrollTop;
  if (hiddenBelow > 2) {
    const rows = Array.from(box.querySelectorAll(".concept"));
    const bottom = box.getBoundingClientRect().bottom;
    const n = rows.filter((r) => r.getBoundingClientRect().bottom > bottom + 1).length;
    more.textContent = `↓ ${n} more concept${n === 1 ? "" : "s"}: scroll the list`;
    more.hidden = false;
    box.classList.add("more");
  } else {
    more.hidden = true;
    box.classList.remove("more");
  }
}

function fillMeta() {
  const i = state.info;
  const rows = [["model", i.model || "(python module)"], ["layer", `${i.layer} · ${i.units} units · ${i.grid[0]}×${i.grid[1]}`],
    ["image", `${i.image_size[1]}×${i.image_size[0]} px`], ["run", i.run || "-"]];
  $("meta").replaceChildren(...rows.map(([k, v]) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    d.append(dt, dd);
    return d;
  }));
}

function fillPalette() {
  const box = $("palette");
  $("palette-note").textContent = `${state.concepts.length} concepts at ${state.info.layer}`;
  box.replaceChildren(...state.concepts.map((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "concept";
    b.setAttribute("role", "radio");
    b.setAttribute("aria-checked", "false");
    b.dataset.index = String(i);
    b.dataset.name = c.name;
    b.style.setProperty("--swatch", c.stroke);
    b.style.setProperty("--c", c.color);
    b.title = `${c.name} (${c.category}): units ${c.units.map((u) => u.unit).join(", ")}`;
    const sw = document.createElement("span"); sw.className = "swatch";
    const nm = document.createElement("span"); nm.className = "name"; nm.textContent = c.name;
    const ct = document.createElement("span"); ct.className = "chip"; ct.textContent = c.category;
    const nu = document.createElement("span"); nu.className = "count"; nu.textContent = String(c.detectors);
    nu.title = `${c.detectors} detector units (IoU above the run's threshold); ${c.units.length} units in all`;
    const key = document.createElement("kbd"); key.textContent = i < 9 ? String(i + 1) : "";
    b.append(key, sw, nm, ct, nu);
    const d = c.drawing;
    if (d) {   // measured at start-up: does the default stroke draw the concept? (docs/paint.md)
      const pct = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(100 * x).toFixed(0)}%`;
      const dr = document.createElement("span"); dr.className = "drawn";
      dr.textContent = d.draws ? `draws ${pct(d.gain)} of the region` : "does not measurably draw";
      dr.title = `the default stroke over the centre of ${d.samples} samples: ${c.name} goes from ` +
        `${(100 * d.before).toFixed(0)}% to ${(100 * d.after).toFixed(0)}% of the region ` +
        `(gain ${pct(d.gain)}, 99% interval ${pct(d.ci99_low)} to ${pct(d.ci99_high)})`;
      b.append(dr);
      b.classList.add(d.draws ? "draws" : "nodraw");
      b.title += ` · ${dr.textContent}`;
    }
    b.addEventListener("click", () => selectConcept(i));
    return b;
  }));
  if (!state.concepts.length) box.textContent = "The run gives no concept at this layer.";
  const measured = state.concepts.filter((c) => c.drawing);
  const dr = state.info.drawing;
  const nodraw = measured.filter((c) => !c.drawing.draws).length;
  $("draw-note").textContent = measured.length && dr ?
    `"Draws +N%": painting the concept over the centre of ${dr.samples} samples turns N% more of that ` +
    `region into it (by the run's segmenter). Faded: does not measurably draw (${nodraw} of ${measured.length}; ` +
    `99% interval's low end under ${Math.round(100 * dr.min_gain)}%).` :
    "Not measured here: whether switching a concept's units on draws it. A concept is listed because its " +
    "units detect it; some may not draw it (see docs/paint.md).";
  if (measured.length) $("palette-note").textContent += ` · ${measured.length - nodraw} draw`;
  $("hide-nodraw-box").hidden = !(measured.length && nodraw);
  applyHide();
  requestAnimationFrame(paletteOverflow);
}

function applyHide() {   // "hide those that do not draw": the faded rows leave the list (not the chosen one)
  const hide = $("hide-nodraw").checked;
  for (const b of $("palette").querySelectorAll(".concept")) {
    b.hidden = hide && b.classList.contains("nodraw") && b.getAttribute("aria-checked") !== "true";
  }
  requestAnimationFrame(paletteOverflow);
}

function shownIndices() {
  return Array.from($("palette").querySelectorAll(".concept")).filter((b) => !b.hidden).map((b) => Number(b.dataset.index));
}

function selectConcept(i) {
  const c = state.concepts[i];
  if (!c) return;
  state.concept = c;
  for (const b of $("palette").querySelectorAll(".concept")) {
    const on = Number(b.dataset.index) === i;
    b.classList.toggle("on", on);
    b.setAttribute("aria-checked", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
  }
  const max = Math.min(c.units.length, state.info.max_units);
  const slider = $("n-units");
  slider.max = String(max);
  // by default a stroke switches all the concept's units (its best 20, as the PNAS app)
  if (Number(slider.value) > max || Number(slider.dataset.touched || 0) === 0) slider.value = String(max);
  state.nUnits = Number(slider.value);
  $("n-units-out").textContent = slider.value;
  updateUnitsLine();
  if ($("hide-nodraw").checked) applyHide();
}

function updateUnitsLine() {
  const c = state.concept;
  if (!c) return;
  const used = c.units.slice(0, state.nUnits);
  const det = used.filter((u) => u.detector).length;
  $("units-line").textContent = `${c.name}: units ${used.map((u) => u.unit).join(", ")}` +
    ` · ${det} detector${det === 1 ? "" : "s"}` + (used.length > det ? `, ${used.length - det} next best` : "");
}

// ------------------------------------------------------------------ samples
async function loadBatch(first) {
  const max = state.info.limits.max_seed;
  first = Math.max(0, Math.min(first, max - BATCH + 1));
  let data;
  try {
    data = await call("samples", { query: { first: String(first), count: String(BATCH) } });
  } catch (e) {
    showError(`Samples: ${e.message}`);
    return;
  }
  state.first = first;
  const box = $("samples");
  box.replaceChildren(...data.samples.map((s) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "sample";
    b.setAttribute("role", "option");
    b.dataset.seed = String(s.seed);
    b.setAttribute("aria-selected", String(s.seed === state.seed));
    b.title = `seed ${s.seed}`;
    const img = document.createElement("img");
    img.src = s.image; img.alt = `sample of seed ${s.seed}`;
    const cap = document.createElement("span"); cap.textContent = String(s.seed);
    b.append(img, cap);
    b.addEventListener("click", () => openSeed(s.seed));
    return b;
  }));
}

async function openSeed(seed) {
  state.seed = seed;
  state.strokes = [];
  state.redo = [];
  $("seed-input").value = String(seed);
  for (const b of $("samples").querySelectorAll(".sample")) {
    b.setAttribute("aria-selected", String(Number(b.dataset.seed) === seed));
  }
  await render();
}

// ------------------------------------------------------------------ rendering
async function render(opts = {}) {
  if (state.seed === null) return;
  const seq = ++state.renderSeq;
  document.body.dataset.busy = "1";
  updateButtons();
  const t0 = performance.now();
  let data;
  try {
    data = await call("render", { body: renderBody(state.seed, state.strokes) });
  } catch (e) {
    if (seq === state.renderSeq) {
      delete document.body.dataset.busy;
      let text = `Render: ${e.message}`;
      if (opts.added && state.strokes[state.strokes.length - 1] === opts.added) {
        state.strokes.pop();   // the stroke was not applied: it leaves the canvas and the stack
        text += " The stroke was not applied and has been removed.";
      }
      showError(text);
      drawOverlay();
      updateButtons();
    }
    return;
  }
  if (seq !== state.renderSeq) return;   // a newer state is on its way
  showError("");
  const img = $("result");
  await new Promise((resolve) => {
    img.onload = resolve; img.onerror = resolve;
    img.src = data.image;
  });
  state.lastEdits = data.edits;
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
  delete document.body.dataset.busy;
  const dl = $("download");
  dl.href = data.image;
  dl.download = `netdissect-paint-seed${state.seed}-${state.strokes.length}strokes.png`;
  $("status").textContent = `seed ${state.seed} · ${state.strokes.length} stroke${state.strokes.length === 1 ? "" : "s"}` +
    ` · forward ${data.forward_ms.toFixed(0)} ms, round trip ${(performance.now() - t0).toFixed(0)} ms`;
  fillEdits();
  drawOverlay();
  updateButtons();
}

function updateButtons() {
  $("undo").disabled = state.strokes.length === 0;
  $("redo").disabled = state.redo.length === 0;
  $("clear").disabled = state.strokes.length === 0;
}

function fillEdits() {
  const list = $("edits");
  const [gh, gw] = state.info.grid;
  $("edits-note").textContent = state.lastEdits.length ? `at ${state.info.layer}` : "";
  if (!state.lastEdits.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No stroke yet: pick a concept and drag on the image.";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(...state.lastEdits.map((e) => {
    const c = state.concepts.find((x) => x.name === e.concept);
    const li = document.createElement("li");
    li.className = `edit ${e.mode}`;
    const mini = document.createElement("canvas");
    mini.width = gw; mini.height = gh; mini.className = "mini";
    const ctx = mini.getContext("2d");
    ctx.fillStyle = "#e4e7ec"; ctx.fillRect(0, 0, gw, gh);
    ctx.fillStyle = e.mode === "erase" ? "#1d2127" : (c ? c.stroke : "#2f6fdf");
    for (const [r, col] of e.cells) ctx.fillRect(col, r, 1, 1);
    const txt = document.createElement("div");
    const head = document.createElement("b");
    head.textContent = `${e.stroke + 1}. ${e.mode} ${e.concept}`;
    const units = document.createElement("span");
    const vals = e.mode === "draw" ? ` = ${fmtValues(e.values)}` : " = 0";
    units.textContent = `units ${e.units.join(", ")}${vals} · ${e.cells.length} of ${gh * gw} cells`;
    txt.append(head, units);
    li.append(mini, txt);
    return li;
  }).reverse());
}

function fmtValues(vals) {
  if (!vals.length) return "";
  const lo = Math.min(...vals), hi = Math.max(...vals);
  return lo === hi ? lo.toFixed(2) : `${lo.toFixed(2)}…${hi.toFixed(2)}`;
}

// ------------------------------------------------------------------ painting
function overlaySize() {
  const o = $("overlay");
  const r = o.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(r.width * dpr), h = Math.round(r.height * dpr);
  if (o.width !== w || o.height !== h) { o.width = w; o.height = h; }
  return r;
}

function toImage(ev) {
  const r = $("overlay").getBoundingClientRect();
  const [h, w] = state.info.image_size;
  return [(ev.clientX - r.left) / r.width * w, (ev.clientY - r.top) / r.height * h];
}

function strokeColor() {
  return state.mode === "erase" ? "rgba(20, 24, 30, .55)" : (state.concept ? state.concept.stroke : "#2f6fdf");
}

function beginStroke(p) {
  maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  maskCtx.lineCap = "round"; maskCtx.lineJoin = "round";
  maskCtx.strokeStyle = "#fff"; maskCtx.fillStyle = "#fff";
  maskCtx.lineWidth = state.brush;
  drawing = { last: p, points: [p] };
  dab(p);
}

function dab(p) {
  maskCtx.beginPath();
  maskCtx.arc(p[0], p[1], state.brush / 2, 0, Math.PI * 2);
  maskCtx.fill();
}

function extendStroke(p) {
  maskCtx.beginPath();
  maskCtx.moveTo(drawing.last[0], drawing.last[1]);
  maskCtx.lineTo(p[0], p[1]);
  maskCtx.stroke();
  drawing.last = p;
  drawing.points.push(p);
  drawOverlay();
}

function endStroke() {
  if (!drawing) return;
  drawing = null;
  if (!state.concept) { showError("Pick a concept in the palette first."); drawOverlay(); return; }
  const stroke = { concept: state.concept.name, mode: state.mode, mask: maskCanvas.toDataURL("image/png"),
    n_units: state.nUnits, strength: state.strength };
  if (state.strokes.length >= state.info.limits.max_strokes) {
    showError(`At most ${state.info.limits.max_strokes} strokes: clear or undo some first.`);
    drawOverlay();
    return;
  }
  state.strokes.push(stroke);
  state.redo = [];
  render({ added: stroke });
}

function drawOverlay() {
  const o = $("overlay");
  const r = overlaySize();
  const ctx = o.getContext("2d");
  ctx.clearRect(0, 0, o.width, o.height);
  if (!state.info) return;
  const [gh, gw] = state.info.grid;
  const sx = o.width / gw, sy = o.height / gh;
  if ($("show-edits").checked) {
    const dpr = window.devicePixelRatio || 1;
    for (const e of state.lastEdits) {   // each switched cell: a dark and a light frame, readable on any image
      const c = state.concepts.find((x) => x.name === e.concept);
      for (const [row, col] of e.cells) {
        ctx.lineWidth = 3 * dpr; ctx.strokeStyle = "rgba(0, 0, 0, .55)";
        ctx.strokeRect(col * sx + 3 * dpr, row * sy + 3 * dpr, sx - 6 * dpr, sy - 6 * dpr);
        ctx.lineWidth = 1.5 * dpr; ctx.strokeStyle = e.mode === "erase" ? "#fff" : (c ? c.stroke : "#fff");
        ctx.strokeRect(col * sx + 3 * dpr, row * sy + 3 * dpr, sx - 6 * dpr, sy - 6 * dpr);
        if (e.mode === "erase") {   // erased cells also crossed
          ctx.beginPath();
          ctx.moveTo(col * sx + 6 * dpr, row * sy + 6 * dpr); ctx.lineTo((col + 1) * sx - 6 * dpr, (row + 1) * sy - 6 * dpr);
          ctx.stroke();
        }
      }
    }
  }
  if (drawing) {   // the stroke being drawn, at the mask's resolution
    ctx.save();
    ctx.globalAlpha = 0.6;
    ctx.imageSmoothingEnabled = false;
    const tint = document.createElement("canvas");
    tint.width = maskCanvas.width; tint.height = maskCanvas.height;
    const t = tint.getContext("2d");
    t.drawImage(maskCanvas, 0, 0);
    t.globalCompositeOperation = "source-in";
    t.fillStyle = strokeColor();
    t.fillRect(0, 0, tint.width, tint.height);
    ctx.drawImage(tint, 0, 0, o.width, o.height);
    ctx.restore();
  }
  if (state.hover && !drawing) {   // the brush: its size on the image, where the pointer is
    const [h, w] = state.info.image_size;
    const [x, y] = state.hover;
    const rx = state.brush / 2 * o.width / w, ry = state.brush / 2 * o.height / h;
    ctx.save();
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(0, 0, 0, .6)";
    ctx.beginPath(); ctx.ellipse(x * o.width / w, y * o.height / h, rx, ry, 0, 0, Math.PI * 2); ctx.stroke();
    ctx.lineWidth = 1.5; ctx.strokeStyle = state.mode === "erase" ? "#fff" : strokeColor();
    ctx.beginPath(); ctx.ellipse(x * o.width / w, y * o.height / h, rx, ry, 0, 0, Math.PI * 2); ctx.stroke();
    ctx.restore();
  }
  if (o.matches(":focus-visible")) {   // the keyboard cursor: one cell of the layer
    const [row, col] = state.cursor;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
    ctx.strokeRect(col * sx + 1, row * sy + 1, sx - 2, sy - 2);
    ctx.strokeStyle = "#000"; ctx.lineDashOffset = 5;
    ctx.strokeRect(col * sx + 1, row * sy + 1, sx - 2, sy - 2);
  }
  void r;
}

function keyboardDab() {
  const [gh, gw] = state.info.grid;
  const [h, w] = state.info.image_size;
  const [row, col] = state.cursor;
  const p = [(col + 0.5) * w / gw, (row + 0.5) * h / gh];
  beginStroke(p);
  endStroke();
}

// ------------------------------------------------------------------ controls
function setMode(mode) {
  state.mode = mode;
  for (const r of document.querySelectorAll("input[name=mode]")) r.checked = r.value === mode;
  $("strength").disabled = mode === "erase";
  $("strength-label").classList.toggle("off", mode === "erase");
  $("stage").dataset.mode = mode;
}

function undo() {
  if (!state.strokes.length) return;
  state.redo.push(state.strokes.pop());
  render();
}

function redo() {
  if (!state.redo.length) return;
  state.strokes.push(state.redo.pop());
  render();
}

function clearAll() {
  if (!state.strokes.length) return;
  state.redo = state.redo.concat(state.strokes.slice().reverse());   // redo brings them back in order
  state.strokes = [];
  render();
}

function bindControls() {
  const o = $("overlay");
  o.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 || state.seed === null) return;
    o.setPointerCapture(ev.pointerId);
    beginStroke(toImage(ev));
    drawOverlay();
  });
  o.addEventListener("pointermove", (ev) => {
    state.hover = toImage(ev);
    if (drawing) extendStroke(state.hover); else drawOverlay();
  });
  o.addEventListener("pointerleave", () => { state.hover = null; drawOverlay(); });
  o.addEventListener("pointerup", () => endStroke());
  o.addEventListener("pointercancel", () => { drawing = null; drawOverlay(); });
  o.addEventListener("focus", drawOverlay);
  o.addEventListener("blur", drawOverlay);
  o.addEventListener("keydown", (ev) => {
    const [gh, gw] = state.info.grid;
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[ev.key]) {
      const [dr, dc] = moves[ev.key];
      state.cursor = [Math.max(0, Math.min(gh - 1, state.cursor[0] + dr)),
        Math.max(0, Math.min(gw - 1, state.cursor[1] + dc))];
      drawOverlay();
      ev.preventDefault();
    } else if (ev.key === " " || ev.key === "Enter") {
      keyboardDab();
      ev.preventDefault();
    }
  });
  window.addEventListener("resize", drawOverlay);
  for (const r of document.querySelectorAll("input[name=mode]")) {
    r.addEventListener("change", () => setMode(r.value));
  }
  const brush = $("brush");
  brush.addEventListener("input", () => {
    state.brush = Number(brush.value); $("brush-out").textContent = brush.value; showBrushCells(); drawOverlay();
  });
  $("pixelated").addEventListener("change", () => $("stage").classList.toggle("pixelated", $("pixelated").checked));
  $("palette").addEventListener("scroll", paletteOverflow);
  $("hide-nodraw").addEventListener("change", applyHide);
  window.addEventListener("resize", paletteOverflow);
  const nu = $("n-units");
  nu.addEventListener("input", () => {
    nu.dataset.touched = "1";
    state.nUnits = Number(nu.value); $("n-units-out").textContent = nu.value; updateUnitsLine();
  });
  const st = $("strength");
  st.addEventListener("input", () => { state.strength = Number(st.value); $("strength-out").textContent = `${st.value}×`; });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear").addEventListener("click", clearAll);
  $("show-edits").addEventListener("change", drawOverlay);
  $("new-batch").addEventListener("click", () => loadBatch(state.first + BATCH));
  $("seed-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = Number($("seed-input").value);
    if (!Number.isInteger(v) || v < 0 || v > state.info.limits.max_seed) {
      showError(`A seed is a whole number from 0 to ${state.info.limits.max_seed}.`);
      return;
    }
    openSeed(v);
  });
  $("palette").addEventListener("keydown", (ev) => {   // arrows move within the radio group
    const shown = shownIndices(), n = shown.length;
    if (!n || !state.concept) return;
    const i = Math.max(0, shown.indexOf(state.concepts.indexOf(state.concept)));
    let j = null;
    if (ev.key === "ArrowDown" || ev.key === "ArrowRight") j = shown[(i + 1) % n];
    if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") j = shown[(i - 1 + n) % n];
    if (j === null) return;
    ev.preventDefault();
    selectConcept(j);
    $("palette").querySelector(`.concept[data-index="${j}"]`).focus();
  });
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox" && t.type !== "range")) return;
    const k = ev.key.toLowerCase();
    const mod = ev.ctrlKey || ev.metaKey;
    if (mod && k === "z" && !ev.shiftKey) { undo(); ev.preventDefault(); return; }
    if (mod && (k === "y" || (k === "z" && ev.shiftKey))) { redo(); ev.preventDefault(); return; }
    if (mod || ev.altKey) return;
    if (k === "d") setMode("draw");
    else if (k === "e") setMode("erase");
    else if (k === "[" || k === "]") {
      brush.value = String(Number(brush.value) + (k === "]" ? 1 : -1));
      brush.dispatchEvent(new Event("input"));
    } else if (k === "delete") clearAll();
    else if (k === "n") loadBatch(state.first + BATCH);
    else if (k === "s") $("download").click();
    else if (/^[1-9]$/.test(k)) selectConcept(Number(k) - 1);
    else return;
    ev.preventDefault();
  });
  setMode("draw");
}

document.addEventListener("DOMContentLoaded", start);
