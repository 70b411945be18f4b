// The relay dashboard: renders the state the server pushes over /events.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COUNTERS = [
    "published", "received", "fired", "gaps", "missed", "replayed",
    "dropped", "rejected", "receiver_errors", "duplicates",
  ];
  const PROBLEMS = new Set(["gaps", "missed", "dropped", "rejected", "receiver_errors"]);
  const token = new URLSearchParams(window.location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setNumber(node, value) {
    const raw = String(value);
    if (node.getAttribute("data-value") !== raw) node.setAttribute("data-value", raw);
    setText(node, Number(value).toLocaleString("en-US"));
  }

  function rate(value) {
    if (!value) return "0";
    if (value >= 100) return Math.round(value).toLocaleString("en-US");
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2013";
    if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " \u00b5s";
    if (seconds < 1) {
      const ms = seconds * 1000;
      return (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + " ms";
    }
    return seconds.toFixed(2) + " s";
  }

  function ago(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 90) return Math.round(seconds) + "s";
    if (seconds < 5400) return Math.round(seconds / 60) + "m";
    return (seconds / 3600).toFixed(1) + "h";
  }

  // Keep one row per key in a tbody: create missing ones, drop stale ones, keep order.
  function syncRows(tbody, items, keyOf, create, update) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.getAttribute("data-key"), row);
    let index = 0;
    for (const item of items) {
      const key = keyOf(item);
      let row = existing.get(key);
      if (row) {
        existing.delete(key);
      } else {
        row = create(item);
        row.setAttribute("data-key", key);
      }
      if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] || null);
      update(row, item);
      index += 1;
    }
    for (const row of existing.values()) row.remove();
  }

  function sparkline(svg, sent, received) {
    const width = 240;
    const height = 36;
    const n = Math.max(sent.length, received.length);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (n < 2) return;
    const peak = Math.max(1, ...sent, ...received);
    const x = (i) => (i * width) / (n - 1);
    const y = (v) => height - 1 - (v / peak) * (height - 3);
    const points = (values) => values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1));
    const area = document.createElementNS(SVG, "path");
    const line = points(sent);
    area.setAttribute("d", "M0," + height + " L" + line.join(" L") + " L" + width + "," + height + " Z");
    area.setAttribute("class", "sent");
    svg.appendChild(area);
    const delivered = document.createElementNS(SVG, "polyline");
    delivered.setAttribute("points", points(received).join(" "));
    delivered.setAttribute("class", "received");
    svg.appendChild(delivered);
    const title = document.createElementNS(SVG, "title");
    title.textContent = "peak " + rate(peak) + "/s over the last " + ago(n) ;
    svg.appendChild(title);
  }

  function signalRow(signal) {
    const row = el("tr", { class: "signal", "data-signal": signal.name });
    row.appendChild(el("td", { class: "name", "data-field": "name" }, signal.name));
    for (const field of ["sent", "received", "errors", "send_rate", "delivery_rate", "p50", "p99"]) {
      row.appendChild(el("td", { class: "num", "data-field": field }));
    }
    const cell = el("td", { class: "plot", "data-field": "plot" });
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 240 36");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "sparkline");
    cell.appendChild(svg);
    row.appendChild(cell);
    return row;
  }

  function latencyCell(cell, recent, overall) {
    if (recent !== null && recent !== undefined) {
      cell.classList.remove("muted");
      cell.setAttribute("data-value", String(recent));
      cell.title = "last minute";
      setText(cell, duration(recent));
    } else {
      cell.classList.add("muted");
      cell.setAttribute("data-value", overall === null || overall === undefined ? "" : String(overall));
      cell.title = "since the processes started (nothing delivered in the last minute)";
      setText(cell, duration(overall));
    }
  }

  function updateSignal(row, signal) {
    const cell = (field) => row.querySelector('[data-field="' + field + '"]');
    setNumber(cell("sent"), signal.sent);
    setNumber(cell("received"), signal.received);
    setNumber(cell("errors"), signal.errors);
    cell("errors").classList.toggle("bad", signal.errors > 0);
    cell("send_rate").setAttribute("data-value", String(signal.send_rate));
    setText(cell("send_rate"), rate(signal.send_rate));
    cell("delivery_rate").setAttribute("data-value", String(signal.delivery_rate));
    setText(cell("delivery_rate"), rate(signal.delivery_rate));
    latencyCell(cell("p50"), signal.latency.p50, signal.latency.p50_all);
    latencyCell(cell("p99"), signal.latency.p99, signal.latency.p99_all);
    const svg = cell("plot").firstChild;
    sparkline(svg, signal.history.sent, signal.history.received);
    row.title = signal.senders + " sending, " + signal.listeners + " listening";
  }

  function workerRow(worker) {
    const row = el("tr", { class: "worker" });
    row.appendChild(el("td", { class: "name", "data-field": "worker" }));
    row.appendChild(el("td", { "data-field": "host" }));
    row.appendChild(el("td", { class: "num", "data-field": "pid" }));
    const state = el("td", { class: "state", "data-field": "state" });
    state.appendChild(el("span", { class: "badge" }));
    state.appendChild(el("span", { class: "seen muted" }));
    row.appendChild(state);
    row.appendChild(el("td", { class: "num", "data-field": "uptime" }));
    row.appendChild(el("td", { class: "num", "data-field": "receive_rate" }));
    for (const name of COUNTERS) row.appendChild(el("td", { class: "num", "data-counter": name }));
    return row;
  }

  function updateWorker(row, worker) {
    row.setAttribute("data-peer-id", worker.id);
    row.setAttribute("data-worker-id", worker.worker_id || "");
    if (row.getAttribute("data-state") !== worker.state) row.setAttribute("data-state", worker.state);
    row.className = "worker state-" + worker.state;
    const cell = (field) => row.querySelector('[data-field="' + field + '"]');
    const name = cell("worker");
    setText(name, worker.worker_id || worker.id);
    name.title = worker.id + " \u00b7 " + worker.kind + " " + worker.version +
      "\nsends: " + (worker.sends.join(", ") || "-") + "\nhears: " + (worker.hears.join(", ") || "-");
    setText(cell("host"), worker.host);
    setText(cell("pid"), String(worker.pid));
    const state = cell("state");
    setText(state.firstChild, worker.state);
    setText(state.lastChild, worker.state === "alive" ? "" : "last seen " + ago(worker.last_seen_ago) + " ago");
    state.setAttribute("data-last-seen", String(worker.last_seen));
    setText(cell("uptime"), ago(worker.uptime));
    setText(cell("receive_rate"), rate(worker.receive_rate));
    for (const counter of COUNTERS) {
      const node = row.querySelector('[data-counter="' + counter + '"]');
      const value = worker.counters[counter] || 0;
      setNumber(node, value);
      node.classList.toggle("bad", PROBLEMS.has(counter) && value > 0);
    }
  }

  function render(state) {
    setText($("namespace"), state.namespace);
    document.title = "relay \u00b7 " + state.namespace;
    const broker = $("broker");
    if (state.broker.ok) {
      broker.setAttribute("data-state", "ok");
      setText(broker, "broker ok");
      broker.title = "";
    } else {
      broker.setAttribute("data-state", "unreachable");
      setText(broker, "broker unreachable");
      broker.title = state.broker.error || "";
    }
    for (const key of ["alive", "gone", "stopped", "signals"]) setNumber($("count-" + key), state.summary[key]);
    const when = new Date((state.polled_at || state.now) * 1000);
    setText($("updated"), "updated " + when.toLocaleTimeString("en-GB"));
    const span = state.signals.length ? state.signals[0].history.sent.length : 0;
    setText($("plot-span"), span ? "(last " + ago(span) + ")" : "");

    syncRows($("signals").tBodies[0], state.signals, (s) => s.name, signalRow, updateSignal);
    $("no-signals").hidden = state.signals.length > 0;
    syncRows($("workers").tBodies[0], state.workers, (w) => w.id, workerRow, updateWorker);
    $("no-workers").hidden = state.workers.length > 0;
    document.body.setAttribute("data-updated", String(state.now));
  }

  function connectionLost() {
    const broker = $("broker");
    broker.setAttribute("data-state", "disconnected");
    setText(broker, "dashboard unreachable, retrying\u2026");
  }

  function poll() {
    fetch("state.json" + query, { cache: "no-store" })
      .then((response) => {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(render)
      .catch(connectionLost)
      .finally(() => window.setTimeout(poll, 1000));
  }

  if (window.EventSource) {
    fetch("state.json" + query, { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((state) => { if (state) render(state); })
      .catch(() => {});
    const events = new EventSource("events" + query);
    events.addEventListener("state", (event) => render(JSON.parse(event.data)));
    events.onerror = connectionLost;
  } else {
    poll();
  }
})();
