// Unit browser of the netdissect report: builds the cards from the embedded JSON, draws each
// card's strip on a canvas when it comes near the screen (thumbnail + the unit's activation map,
// upsampled and thresholded here), then sorts, filters and jumps by moving/hiding the cards.
// No network access: every file it loads lies in the report folder.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var esc = function (s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  };
  var color = function (cat) { return data.colors[cat] || "#c7cbd1"; };
  var fmt = function (x) { return x.toFixed(3); };

  // ---- strips, drawn on canvases from the thumbnails and the unit's activation maps --------
  var T = data.tile, GAP = data.gap;
  function grid(L) { var c = Math.max(1, Math.min(L.k, data.cols)); return [c, Math.ceil(L.k / c)]; }
  function stripSize(L) {
    var g = grid(L);
    return [g[0] * T + (g[0] - 1) * GAP, g[1] * T + (g[1] - 1) * GAP];
  }
  var F16 = (function () {  // float16 -> float32 lookup table (65536 entries)
    var t = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
      t[h] = e === 0 ? s * f * Math.pow(2, -24) : e === 31 ? (f ? NaN : s * Infinity) :
        s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return t;
  })();
  function decodeMaps(u, L) {  // base64 little-endian float16/float32 -> Float32Array (k*mh*mw)
    var bin = atob(u.m), n = bin.length, bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    if (L.dtype === "f4") return new Float32Array(bytes.buffer);
    var out = new Float32Array(n / 2);
    for (var j = 0; j < out.length; j++) out[j] = F16[bytes[2 * j] | (bytes[2 * j + 1] << 8)];
    return out;
  }
  // Bilinear resize of an (h, w) map to (T, T) as torch's F.interpolate(align_corners=False).
  function axis(n) {
    var i0 = new Int32Array(T), i1 = new Int32Array(T), l = new Float32Array(T), sc = n / T;
    for (var d = 0; d < T; d++) {
      var src = Math.max(0, (d + 0.5) * sc - 0.5), a = Math.floor(src);
      i0[d] = a; i1[d] = a < n - 1 ? a + 1 : a; l[d] = src - a;
    }
    return { i0: i0, i1: i1, l: l };
  }
  function upsample(maps, off, h, w) {
    var ay = axis(h), ax = axis(w), out = new Float32Array(T * T);
    for (var y = 0; y < T; y++) {
      var r0 = off + ay.i0[y] * w, r1 = off + ay.i1[y] * w, ly = ay.l[y];
      for (var x = 0; x < T; x++) {
        var lx = ax.l[x], a = ax.i0[x], b = ax.i1[x];
        var top = maps[r0 + a] * (1 - lx) + maps[r0 + b] * lx;
        var bot = maps[r1 + a] * (1 - lx) + maps[r1 + b] * lx;
        out[y * T + x] = top * (1 - ly) + bot * ly;
      }
    }
    return out;
  }
  function isEdge(reg, x, y) {  // inner boundary, 1 px; the image border does not count
    return (x > 0 && !reg[y * T + x - 1]) || (x < T - 1 && !reg[y * T + x + 1]) ||
      (y > 0 && !reg[(y - 1) * T + x]) || (y < T - 1 && !reg[(y + 1) * T + x]);
  }
  // Overlay for a photo: transparent inside the region, a light line on its edge, dim outside
  // (out = 0.28 * image + 14, as the paper's figures).
  function dimOverlay(ctx, up, thr) {
    var im = ctx.createImageData(T, T), d = im.data, reg = new Uint8Array(T * T), p;
    for (p = 0; p < T * T; p++) reg[p] = up[p] > thr ? 1 : 0;
    for (var y = 0; y < T; y++) for (var x = 0; x < T; x++) {
      p = y * T + x;
      var o = 4 * p;
      if (!reg[p]) { d[o] = d[o + 1] = d[o + 2] = 19; d[o + 3] = 184; }
      else if (isEdge(reg, x, y)) { d[o] = d[o + 1] = d[o + 2] = 255; d[o + 3] = 179; }
    }
    return im;
  }
  // Without a photo (dataset gone, image unreadable): the map in grey, the region in amber.
  function mapTile(ctx, up, thr) {
    var lo = Infinity, hi = -Infinity, p;
    for (p = 0; p < T * T; p++) { if (up[p] < lo) lo = up[p]; if (up[p] > hi) hi = up[p]; }
    var im = ctx.createImageData(T, T), d = im.data, reg = new Uint8Array(T * T);
    for (p = 0; p < T * T; p++) reg[p] = up[p] > thr ? 1 : 0;
    for (var y = 0; y < T; y++) for (var x = 0; x < T; x++) {
      p = y * T + x;
      var g = 48 + 120 * (hi > lo ? (up[p] - lo) / (hi - lo) : 0), o = 4 * p, c = [g, g, g];
      if (reg[p]) c = [0.45 * g + 0.55 * 255, 0.45 * g + 0.55 * 176, 0.45 * g + 0.55 * 32];
      if (reg[p] && isEdge(reg, x, y)) c = c.map(function (v) { return 0.3 * v + 0.7 * 255; });
      d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = 255;
    }
    return im;
  }
  var SH = data.sheets, sheets = { t: {}, g: {}, f: {} };  // kind -> sheet index -> Promise of an <img>
  function sheet(kind, id) {
    var n = Math.floor(id / SH.per), cache = sheets[kind];
    if (!cache[n]) {
      cache[n] = new Promise(function (ok, fail) {
        var im = new Image();
        im.onload = function () { ok(im); };
        im.onerror = function () { fail(new Error("cannot load " + SH[kind][n])); };
        im.src = SH[kind][n];
      });
    }
    return cache[n];
  }
  function cell(id) { var c = id % SH.per; return [(c % SH.cols) * T, Math.floor(c / SH.cols) * T]; }
  function frame(g, x, y) {  // an image-level concept (scene, texture): the whole tile
    g.lineWidth = 5; g.strokeStyle = "rgba(0,0,0,.6)"; g.strokeRect(x + 2.5, y + 2.5, T - 5, T - 5);
    g.lineWidth = 3; g.strokeStyle = "rgb(0,229,255)"; g.strokeRect(x + 1.5, y + 1.5, T - 3, T - 3);
  }
  var scratch = document.createElement("canvas");
  scratch.width = scratch.height = T;
  var sctx = scratch.getContext("2d");
  function drawStrip(card) {
    var u = card._u, L = data.layers[u.layer], g = grid(L), per = L.mh * L.mw;
    var act = card.querySelector("canvas.act"), gt = card.querySelector("canvas.gt");
    var ctx = act.getContext("2d"), gctx = gt.getContext("2d"), maps = decodeMaps(u, L), jobs = [];
    var thr = u.th === null ? Infinity : u.th;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, act.width, act.height);
    u.t.forEach(function (ti, j) {
      var x = (j % g[0]) * (T + GAP), y = Math.floor(j / g[0]) * (T + GAP);
      ctx.fillStyle = "rgb(238,240,243)";
      ctx.fillRect(x, y, T, T);
      if (ti === -1) return;
      var up = upsample(maps, j * per, L.mh, L.mw);
      if (ti < 0) { ctx.putImageData(mapTile(ctx, up, thr), x, y); return; }
      jobs.push(sheet("t", ti).then(function (im) {
        var c = cell(ti);
        ctx.drawImage(im, c[0], c[1], T, T, x, y, T, T);
        if (L.img) return;  // an image-level layer: no spatial map, so no region to outline
        sctx.putImageData(dimOverlay(sctx, up, thr), 0, 0);
        ctx.drawImage(scratch, x, y);
      }));
      var gi = u.g[j], gjob = Promise.resolve();
      if (gi === -3) frame(gctx, x, y);
      else if (gi >= 0) {
        gjob = sheet("g", gi).then(function (im) {
          var c = cell(gi);
          gctx.drawImage(im, c[0], c[1], T, T, x, y, T, T);
        });
        jobs.push(gjob);
      }
      var fi = u.f ? u.f[j] : -1;  // the unit's formula (netdissect explain): magenta, inside and over the cyan
      if (fi >= 0) {
        jobs.push(gjob.then(function () { return sheet("f", fi); }).then(function (im) {
          var c = cell(fi);
          gctx.drawImage(im, c[0], c[1], T, T, x, y, T, T);
        }));
      }
    });
    return Promise.all(jobs).then(function () { act.dataset.state = "drawn"; },
      function (e) { act.dataset.state = "failed"; console.error(String(e.message || e)); });
  }
  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting && !e.target._drawn) {
        e.target._drawn = true;
        observer.unobserve(e.target);
        drawStrip(e.target);
      }
    });
  }, { rootMargin: "600px 0px" }) : null;

  // One line of the label's scorecard (docs/label-trust.md), when the run has one.
  function trustHTML(t) {
    if (!t) return "";
    var f = function (v, pct) { return v === null || v === undefined ? "\u2013" : pct ? Math.round(100 * v) + "%" : String(v); };
    return '<div class="trust" style="font-size:11px;color:#555;margin-top:2px" title="BH q-value of the label ' +
      "(image-permutation null); share of bootstrap resamples giving the same label; 95% IoU interval; held-out " +
      'Pearson r of peak activation vs concept area (image) and of the upsampled map vs the mask (pixel)">' +
      "q " + f(t.q) + " \u00b7 stable " + f(t.stab, true) + " \u00b7 IoU " + f(t.ci[0]) + "\u2013" + f(t.ci[1]) +
      " \u00b7 held-out r " + f(t.r_img) + " / " + f(t.r_pix) + "</div>";
  }

  function cardHTML(u) {
    var L = data.layers[u.layer], wh = stripSize(L);
    var none = u.dead ? "dead unit" : "no concept";
    var label = u.label ? esc(u.label) : "<i>" + none + "</i>";
    var chip = u.cat ? '<span class="chip">' + esc(u.cat) + "</span>" : "";
    var pct = Math.max(0, Math.min(100, 100 * u.iou / (u.sc ? 1 : data.max_iou)));
    var title = u.det ? "detector" : u.sc ? "not a detector (AUROC below the threshold, or q-value \u2265 --fdr)" : u.trust ? "not a detector (IoU \u2264 threshold, or the label's q-value \u2265 --fdr)"
      : "not a detector (IoU \u2264 threshold)";
    var alts = u.alt.map(function (a) {
      return '<span class="alt" style="--c:' + color(a[1]) + '" title="' + esc(a[1]) + '"><b>' +
        esc(a[0]) + "</b> " + fmt(a[2]) + "</span>";
    }).join("");
    var alt = "Top " + L.k + " images of " + L.name + " unit " + u.unit;
    return '<article class="card ' + (u.det ? "det" : "nodet") + '" id="' + esc(L.id + "-" + u.unit) +
      '" style="--c:' + (u.cat ? color(u.cat) : "#c7cbd1") + '" title="' + title + '">' +
      '<div class="card-head"><span class="unit-no">#' + u.unit + "</span>" +
      '<span class="unit-label" title="' + esc(u.label || none) + '">' + label + "</span>" + chip +
      '<span class="iou"><small>' + (u.sc || "IoU") + ' </small>' + fmt(u.iou) + "</span></div>" +
      '<div class="bar"><span style="width:' + pct.toFixed(1) + '%"></span></div>' +
      '<div class="strip" style="aspect-ratio:' + wh[0] + "/" + wh[1] + '">' +
      '<canvas class="act" role="img" width="' + wh[0] + '" height="' + wh[1] + '" aria-label="' + esc(alt) + '"></canvas>' +
      '<canvas class="gt" width="' + wh[0] + '" height="' + wh[1] + '"></canvas></div>' +
      (alts ? '<div class="alts"><span>runners-up</span>' + alts + "</div>" : '<div class="alts"><span>no runner-up concept</span></div>') +
      (u.formula ? '<div class="alts formula" title="the best formula of concepts (netdissect explain); its mask ' +
        'is outlined in magenta on the top images, the label\'s in cyan"><span>formula</span>' +
        '<span class="alt" style="--c:rgb(255,40,200)"><b>' + esc(u.formula[0]) +
        "</b> " + fmt(u.formula[1]) + (u.formula[2] !== null && u.formula[2] !== undefined ?
        ' <span title="BH q-value of the formula (image-permutation null, as the label\'s)">\u00b7 q ' +
        String(u.formula[2]) + "</span>" : "") + "</span></div>" : "") +
      trustHTML(u.trust) +
      (u.sc && u.label ? '<div class="trust" style="font-size:11px;color:#555;margin-top:2px" title="BH q-value of the ' +
        'label (one-sided Mann-Whitney U test of the activation on images holding the concept vs not)">q ' +
        (u.q === null ? "\u2013" : String(u.q)) + " \u00b7 image-level (no region)</div>" : "") +
      "</article>";
  }

  // Build one column per layer.
  var columns = $("columns");
  var byLayer = data.layers.map(function () { return []; });
  data.units.forEach(function (u) { byLayer[u.layer].push(u); });
  columns.innerHTML = data.layers.map(function (L, i) {
    return '<section class="column" data-layer="' + i + '"><h3>' + esc(L.name) +
      ' <small class="col-count"></small></h3><div class="grid">' +
      byLayer[i].map(cardHTML).join("") + '</div><p class="empty" hidden>No unit matches.</p></section>';
  }).join("");
  var cols = Array.prototype.slice.call(columns.querySelectorAll(".column"));
  var cards = data.layers.map(function (L, i) {
    var grid = cols[i].querySelector(".grid");
    return byLayer[i].map(function (u, j) {
      var el = grid.children[j];
      el._u = u;
      if (observer) observer.observe(el); else { el._drawn = true; drawStrip(el); }
      return { u: u, el: el };
    });
  });

  var controls = ["sort", "category", "detector", "search", "outlines"];
  var sorters = {
    iou: function (a, b) { return b.u.iou - a.u.iou || a.u.unit - b.u.unit; },
    unit: function (a, b) { return a.u.unit - b.u.unit; },
    label: function (a, b) {
      if (!a.u.label !== !b.u.label) return a.u.label ? -1 : 1;
      return a.u.label.localeCompare(b.u.label) || b.u.iou - a.u.iou || a.u.unit - b.u.unit;
    }
  };

  // One layer at a time: the tabs pick it (and the summary panel shown beside the overview).
  var current = 0;
  var tabs = Array.prototype.slice.call(document.querySelectorAll(".layer-tab"));
  var panels = Array.prototype.slice.call(document.querySelectorAll(".layer-panel[data-layer]"));
  function showLayer(i) {
    if (!(i >= 0 && i < data.layers.length)) return;
    current = i;
    tabs.forEach(function (t, j) { t.setAttribute("aria-selected", j === i ? "true" : "false"); t.tabIndex = j === i ? 0 : -1; });
    panels.forEach(function (p) { p.hidden = +p.dataset.layer !== i; });
    $("jump-layer").value = String(i);
  }

  function apply() {
    var sort = sorters[$("sort").value] || sorters.iou;
    var cat = $("category").value, det = $("detector").value;
    var q = $("search").value.trim().toLowerCase();
    document.body.classList.toggle("outlines", $("outlines").checked);
    var shown = 0, total = 0;
    cards.forEach(function (list, i) {
      cols[i].hidden = i !== current;
      if (i !== current) return;
      var grid = cols[i].querySelector(".grid"), frag = document.createDocumentFragment(), n = 0;
      list.slice().sort(sort).forEach(function (c) {
        var ok = (!cat || c.u.cat === cat) && (!det || String(+c.u.det) === det) &&
          (!q || c.u.label.toLowerCase().indexOf(q) >= 0);
        c.el.hidden = !ok;
        if (ok) n += 1;
        frag.appendChild(c.el);
      });
      grid.appendChild(frag);
      cols[i].querySelector(".col-count").textContent = n + " of " + list.length + " units";
      cols[i].querySelector(".empty").hidden = n > 0;
      shown = n;
      total = list.length;
    });
    $("count").textContent = "Showing " + shown + " of " + total + " units of " + data.layers[current].name;
  }

  // The sticky toolbar's height: a card scrolled to must land below it.
  function barHeight() {
    var h = $("toolbar").getBoundingClientRect().height + 12;
    document.documentElement.style.setProperty("--bar", h + "px");
    return h;
  }
  // Scroll so that el's top sits just below the toolbar, and keep it there while the layout above it
  // still moves (charts loading, cards laid out late); then flash it, on screen.  A user's own scroll
  // stops the settling.
  var settling = null;
  function settle(el) {
    if (settling) settling.stop();
    var frames = 0, still = 0, stopped = false;
    function stop() { stopped = true; ["wheel", "touchstart", "keydown", "mousedown"].forEach(function (e) {
      window.removeEventListener(e, stop, true); }); }
    ["wheel", "touchstart", "keydown", "mousedown"].forEach(function (e) { window.addEventListener(e, stop, true); });
    settling = { stop: stop };
    function step() {
      if (stopped) return;
      var want = barHeight(), top = el.getBoundingClientRect().top, before = window.scrollY;
      if (Math.abs(top - want) > 1) window.scrollBy(0, top - want);
      var moved = Math.abs(window.scrollY - before) > 0.5;
      still = moved ? 0 : still + 1;
      frames += 1;
      var done = document.readyState === "complete" && still >= 3;
      if (done || frames > 240) {
        stop();
        Array.prototype.forEach.call(document.querySelectorAll(".card.target"), function (c) {
          c.classList.remove("target"); });
        el.classList.add("target");   // stays outlined: the unit the link or the jump named
        el.classList.remove("flash");
        void el.offsetWidth;
        el.classList.add("flash");
        el.dataset.settled = String(frames);
        return;
      }
      requestAnimationFrame(step);
    }
    barHeight();
    el.scrollIntoView({ block: "start" });
    requestAnimationFrame(step);
  }

  function jump(layer, unit) {
    var list = cards[layer];
    if (!list || !(unit >= 0 && unit < list.length)) {
      $("jump-unit").setCustomValidity("no such unit");
      $("jump-unit").reportValidity();
      return false;
    }
    $("jump-unit").setCustomValidity("");
    showLayer(layer);
    var el = list[unit].el;
    if (el.hidden) {  // the unit is filtered out: clear the filters so it can be shown
      $("category").value = ""; $("detector").value = ""; $("search").value = "";
    }
    apply();
    settle(el);
    if (history.replaceState) history.replaceState(null, "", "#" + el.id);
    return true;
  }

  // ---- enlarged views: a unit's strip at up to twice its drawn size, a chart at its full size ----
  var zoom = $("zoom");
  function openZoom(title, node) {
    $("zoom-title").textContent = title;
    $("zoom-body").replaceChildren(node);
    if (zoom.showModal) { if (!zoom.open) zoom.showModal(); } else zoom.setAttribute("open", "");
  }
  function zoomStrip(card) {
    var u = card._u, L = data.layers[u.layer];
    var act = card.querySelector("canvas.act"), gt = card.querySelector("canvas.gt");
    var scale = Math.max(1, Math.min(2, (window.innerWidth * 0.92 - 24) / act.width, (window.innerHeight * 0.9 - 80) / act.height));
    var box = document.createElement("div");
    box.className = "strip-zoom";
    [act].concat($("outlines").checked ? [gt] : []).forEach(function (src) {
      var c = document.createElement("canvas");
      c.width = src.width; c.height = src.height;
      c.style.width = Math.round(src.width * scale) + "px";
      c.style.height = Math.round(src.height * scale) + "px";
      c.getContext("2d").drawImage(src, 0, 0);
      box.appendChild(c);
    });
    box.dataset.scale = String(scale);
    openZoom(L.name + " unit " + u.unit + (u.label ? " · " + u.label + " (" + (u.sc || "IoU") + " " + fmt(u.iou) + ")" : ""), box);
  }
  columns.addEventListener("click", function (e) {
    var strip = e.target.closest && e.target.closest(".strip");
    if (!strip) return;
    var card = strip.closest(".card");
    var draw = card._drawn ? Promise.resolve() : (card._drawn = true, drawStrip(card));
    draw.then(function () { zoomStrip(card); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("a.zoomable"), function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      var img = document.createElement("img");
      img.src = a.getAttribute("href");
      img.alt = a.querySelector("img").alt;
      openZoom(img.alt, img);
    });
  });
  zoom.addEventListener("click", function (e) { if (e.target === zoom) zoom.close(); });

  controls.forEach(function (id) {
    $(id).addEventListener(id === "search" ? "input" : "change", apply);
  });
  tabs.forEach(function (t, i) {
    t.addEventListener("click", function () {
      showLayer(i); apply();
      if (history.replaceState) history.replaceState(null, "", "#" + data.layers[i].id);
    });
    t.addEventListener("keydown", function (e) {
      var d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!d) return;
      var j = (i + d + tabs.length) % tabs.length;
      tabs[j].click(); tabs[j].focus(); e.preventDefault();
    });
  });
  $("jump-layer").addEventListener("change", function () { showLayer(+$("jump-layer").value); apply(); });
  $("jump-go").addEventListener("click", function () {
    jump(+$("jump-layer").value, parseInt($("jump-unit").value, 10));
  });
  $("jump-unit").addEventListener("keydown", function (e) {
    if (e.key === "Enter") { e.preventDefault(); $("jump-go").click(); }
  });
  window.netdissectReport = { apply: apply, jump: jump, showLayer: showLayer, data: data, upsample: upsample,
    current: function () { return current; },
    drawStrip: function (id) { var el = document.getElementById(id); el._drawn = true; return drawStrip(el); } };

  // Deep links: index.html#LAYERID (a layer), #LAYERID-UNIT or #LAYERID/UNIT (a unit).
  function fromHash() {
    var h = decodeURIComponent(location.hash.slice(1)), ids = data.layers.map(function (L) { return L.id; });
    if (!h) return false;
    var li = ids.indexOf(h);
    if (li >= 0) { showLayer(li); apply(); return true; }
    var m = h.match(/^(.+)[-\/](\d+)$/);
    if (m && (li = ids.indexOf(m[1])) >= 0) return jump(li, +m[2]);
    return false;
  }
  window.addEventListener("hashchange", fromHash);
  showLayer(0);
  apply();
  barHeight();
  fromHash();
})();
