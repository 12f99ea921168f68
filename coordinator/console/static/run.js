// The live run page: asks GET /api/runs/<name> every 2 s and redraws the tables and three inline SVG charts.
// First-party, no library; text goes in with textContent only.
"use strict";
(function () {
  const root = document.getElementById("run");
  if (!root) return;
  const name = root.dataset.name;
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#0b4f9c", "#b35900", "#0d5e1f", "#8a1c1c", "#5b2a86", "#333333", "#00627a", "#7a4b00"];
  const DONE = ["finished", "failed", "stopped"];
  const W = 420, H = 230, L = 58, R = 10, T = 12, B = 34;

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) { return v === null || v === undefined ? "—" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3)); }

  // series: [{label, values: {round: value}}]; bars: grouped bars instead of lines.
  function chart(id, title, series, rounds, yLabel, bars) {
    const box = document.getElementById(id);
    box.replaceChildren();
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": id + "-t"});
    svg.appendChild(el("title", {id: id + "-t"}, title));
    let max = 0;
    for (const s of series) for (const v of Object.values(s.values)) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    const n = Math.max(rounds.length, 1);
    const x = (i) => L + (W - L - R) * (i + 0.5) / n;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#111"}));
    svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#111"}));
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(el("text", {x: L - 4, y: y(max * f) + 4, "text-anchor": "end"}, fmt(max * f)));
    }
    rounds.forEach((r, i) => svg.appendChild(el("text", {x: x(i), y: H - B + 14, "text-anchor": "middle"}, String(r))));
    svg.appendChild(el("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, "round"));
    svg.appendChild(el("text", {x: 10, y: T + (H - T - B) / 2, transform: `rotate(-90 10 ${T + (H - T - B) / 2})`,
      "text-anchor": "middle"}, yLabel));
    const width = (W - L - R) / n * 0.8 / Math.max(series.length, 1);
    series.forEach((s, k) => {
      const colour = COLOURS[k % COLOURS.length];
      const pts = [];
      rounds.forEach((r, i) => {
        const v = s.values[r];
        if (v === null || v === undefined) return;
        if (bars) {
          const left = x(i) - (W - L - R) / n * 0.4 + width * k;
          svg.appendChild(el("rect", {x: left, y: y(v), width: width, height: H - B - y(v), fill: colour},
          )).appendChild(el("title", {}, `${s.label}, round ${r}: ${v}`));
        } else {
          pts.push(`${x(i)},${y(v)}`);
          // hollow markers, larger for earlier series, keep hospitals with equal values visible
          svg.appendChild(el("circle", {cx: x(i), cy: y(v), r: 3 + 2 * Math.max(series.length - 1 - k, 0),
            fill: "none", stroke: colour, "stroke-width": 2}))
            .appendChild(el("title", {}, `${s.label}, round ${r}: ${fmt(v)}`));
        }
      });
      if (!bars && pts.length > 1) {
        svg.insertBefore(el("polyline", {points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2}), svg.children[1]);
      }
    });
    box.appendChild(svg);
    const legend = document.createElement("ul");
    legend.className = "legend";
    series.forEach((s, k) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[k % COLOURS.length];
      item.append(swatch, s.label);
      legend.appendChild(item);
    });
    if (!series.length) {
      const item = document.createElement("li");
      item.textContent = "no data yet";
      legend.appendChild(item);
    }
    box.appendChild(legend);
  }

  function cell(row, text, numeric) {
    const td = document.createElement("td");
    if (numeric) td.className = "n";
    td.textContent = text;
    row.appendChild(td);
  }

  function pairs(obj, show) {
    return Object.keys(obj).sort().map((k) => `${k} ${show(obj[k])}`).join(", ");
  }

  function draw(run) {
    const status = document.getElementById("status");
    status.textContent = run.status;
    status.className = "badge s-" + run.status;
    document.getElementById("rounds-done").textContent = run.rounds_done;
    document.getElementById("message").textContent = run.message;
    document.getElementById("flwr-run").textContent = run.flwr_run_id === null ? "not yet started" : run.flwr_run_id;
    document.getElementById("model-link").hidden = !run.files.model;
    const tail = document.getElementById("log-tail");
    tail.textContent = run.log_tail;
    tail.hidden = !run.log_tail;
    if (DONE.includes(run.status)) {
      const stop = document.getElementById("stop-form");
      if (stop) stop.hidden = true;
    }
    const hospitals = document.getElementById("hospitals");
    hospitals.replaceChildren();
    for (const h of run.hospitals) {
      const tr = document.createElement("tr");
      cell(tr, h.name);
      cell(tr, h.patients ?? "—", true);
      cell(tr, h.consented ?? "—", true);
      cell(tr, `${h.epsilon_spent === null ? "—" : h.epsilon_spent.toFixed(2)} / ${h.epsilon_budget ?? "—"}`, true);
      hospitals.appendChild(tr);
    }
    const rows = document.getElementById("rounds");
    rows.replaceChildren();
    for (const r of run.rounds) {
      const tr = document.createElement("tr");
      cell(tr, r.round, true);
      cell(tr, r.status || "");
      cell(tr, r.block ?? "—", true);
      cell(tr, pairs(r.metrics, fmt));
      cell(tr, pairs(r.used, String));
      cell(tr, Object.entries(r.errors).map(([k, v]) => `${k}: ${v}`).join("; "));
      rows.appendChild(tr);
    }
    const rounds = run.rounds.map((r) => r.round);
    const metricNames = [...new Set(run.rounds.flatMap((r) => Object.keys(r.metrics)))];
    chart("chart-metrics", "Metrics of the global model per round", metricNames.map((m) => ({
      label: m, values: Object.fromEntries(run.rounds.map((r) => [r.round, r.metrics[m] ?? null]))})), rounds, "value");
    const names = [...new Set(run.hospitals.map((h) => h.name).concat(run.rounds.flatMap((r) => Object.keys(r.used))))];
    chart("chart-epsilon", "Cumulative epsilon spent per hospital per round", names.map((h) => ({
      label: h, values: Object.fromEntries(run.rounds.map((r) => [r.round, r.epsilon[h] ?? null]))})), rounds, "ε spent");
    chart("chart-used", "Patients used for training per hospital per round", names.map((h) => ({
      label: h, values: Object.fromEntries(run.rounds.map((r) => [r.round, r.used[h] ?? null]))})), rounds, "patients", true);
  }

  let timer = null;
  async function poll() {
    try {
      const reply = await fetch(`/api/runs/${encodeURIComponent(name)}`, {headers: {Accept: "application/json"}});
      if (reply.status === 401) { window.location.assign("/login"); return; }
      if (reply.ok) {
        const run = await reply.json();
        draw(run);
        if (DONE.includes(run.status)) { clearInterval(timer); return; }
      }
    } catch (err) { /* the next poll tries again */ }
  }
  poll();
  timer = setInterval(poll, 2000);
})();
