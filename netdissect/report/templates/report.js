// Unit browser of the netdissect report: builds the cards from the embedded JSON,
// then sorts, filters and jumps by moving/hiding those cards. No network access.
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

  function cardHTML(u) {
    var L = data.layers[u.layer];
    var none = u.dead ? "dead unit" : "no concept";
    var label = u.label ? esc(u.label) : "<i>" + none + "</i>";
    var chip = u.cat ? '<span class="chip">' + esc(u.cat) + "</span>" : "";
    var pct = Math.max(0, Math.min(100, 100 * u.iou / data.max_iou));
    var title = u.det ? "detector" : "not a detector (IoU \u2264 threshold)";
    var alts = u.alt.map(function (a) {
      return '<span class="alt" style="--c:' + color(a[1]) + '" title="' + esc(a[1]) + '"><b>' +
        esc(a[0]) + "</b> " + fmt(a[2]) + "</span>";
    }).join("");
    var alt = "Top " + L.k + " images of " + L.name + " unit " + u.unit;
    return '<article class="card ' + (u.det ? "det" : "nodet") + '" id="' + esc(L.id + "-" + u.unit) +
      '" style="--c:' + (u.cat ? color(u.cat) : "#c7cbd1") + '" title="' + title + '">' +
      '<div class="card-head"><span class="unit-no">#' + u.unit + "</span>" +
      '<span class="unit-label" title="' + esc(u.label || none) + '">' + label + "</span>" + chip +
      '<span class="iou"><small>IoU </small>' + fmt(u.iou) + "</span></div>" +
      '<div class="bar"><span style="width:' + pct.toFixed(1) + '%"></span></div>' +
      '<div class="strip"><img class="act" loading="lazy" decoding="async" width="' + L.w + '" height="' + L.h +
      '" alt="' + esc(alt) + '" src="' + esc(u.img) + '">' +
      (u.gt ? '<img class="gt" loading="lazy" decoding="async" width="' + L.w + '" height="' + L.h +
        '" alt="" src="' + esc(u.gt) + '">' : "") + "</div>" +
      (alts ? '<div class="alts"><span>runners-up</span>' + alts + "</div>" : '<div class="alts"><span>no runner-up concept</span></div>') +
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
    return byLayer[i].map(function (u, j) { return { u: u, el: grid.children[j] }; });
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

  function shownLayers() {
    return Array.prototype.map.call(document.querySelectorAll(".layer-toggle"), function (x) { return x.checked; });
  }

  function apply() {
    var sort = sorters[$("sort").value] || sorters.iou;
    var cat = $("category").value, det = $("detector").value;
    var q = $("search").value.trim().toLowerCase();
    var show = shownLayers(), shown = 0, total = 0, ncols = 0;
    document.body.classList.toggle("outlines", $("outlines").checked);
    cards.forEach(function (list, i) {
      cols[i].hidden = !show[i];
      if (!show[i]) return;
      ncols += 1;
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
      shown += n;
      total += list.length;
    });
    columns.style.setProperty("--ncols", Math.max(1, ncols));
    $("count").textContent = "Showing " + shown + " of " + total + " units";
  }

  function jump(layer, unit) {
    var list = cards[layer];
    if (!list || !(unit >= 0 && unit < list.length)) {
      $("jump-unit").setCustomValidity("no such unit");
      $("jump-unit").reportValidity();
      return false;
    }
    $("jump-unit").setCustomValidity("");
    var boxes = document.querySelectorAll(".layer-toggle");
    if (!boxes[layer].checked) boxes[layer].checked = true;
    var el = list[unit].el;
    if (el.hidden) {  // the unit is filtered out: clear the filters so it can be shown
      $("category").value = ""; $("detector").value = ""; $("search").value = "";
    }
    apply();
    el.scrollIntoView({ block: "center" });
    el.classList.remove("flash");
    void el.offsetWidth;
    el.classList.add("flash");
    if (history.replaceState) history.replaceState(null, "", "#" + el.id);
    return true;
  }

  controls.forEach(function (id) {
    $(id).addEventListener(id === "search" ? "input" : "change", apply);
  });
  Array.prototype.forEach.call(document.querySelectorAll(".layer-toggle"), function (x) {
    x.addEventListener("change", apply);
  });
  $("jump-go").addEventListener("click", function () {
    jump(+$("jump-layer").value, parseInt($("jump-unit").value, 10));
  });
  $("jump-unit").addEventListener("keydown", function (e) {
    if (e.key === "Enter") { e.preventDefault(); $("jump-go").click(); }
  });
  window.netdissectReport = { apply: apply, jump: jump, data: data };

  apply();
  // Deep link: index.html#LAYERID-UNIT
  var m = location.hash.match(/^#(.+)-(\d+)$/);
  if (m) {
    var li = data.layers.map(function (L) { return L.id; }).indexOf(decodeURIComponent(m[1]));
    if (li >= 0) { $("jump-layer").value = String(li); jump(li, +m[2]); }
  }
})();
