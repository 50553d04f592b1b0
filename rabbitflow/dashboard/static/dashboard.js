// rabbitflow dashboard: polls /api/status every 2 s and rewrites the figures in place;
// the dead-letter view pages /api/dead-letters. No library, no build step. Every value
// from the broker is written with textContent, never as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const PAGE = 50;
  const csrf = document.querySelector('meta[name="rabbitflow-csrf"]').content;
  const readOnly = document.querySelector('meta[name="rabbitflow-read-only"]').content === "true";
  const $ = (id) => document.getElementById(id);

  let owners = {};          // DLQ name -> work queue
  let deadDepth = {};       // work queue -> dead letters (from the status poll)
  let withDead = new Set(); // work queues that keep dead letters
  const view = { queue: null, offset: 0, error: "", header: "", selected: new Set(), page: null };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
    return node;
  }

  function num(v) { return v === null || v === undefined ? "-" : String(v); }
  function rate(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(1); }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
    let body = null;
    try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
    if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
    return body;
  }

  function post(path, payload) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Rabbitflow-CSRF": csrf },
      body: JSON.stringify(payload),
    });
  }

  function report(text, isError) {
    const box = $("report");
    box.textContent = text;
    box.className = "report" + (isError ? " error" : "");
    box.hidden = false;
  }

  // ---- status --------------------------------------------------------------------------

  function updateGraph(status) {
    const rows = {};
    for (const r of status.queues) rows[r.queue] = r;
    for (const g of document.querySelectorAll("g.node.queue")) {
      const name = g.dataset.queue;
      const f = status.depths[name] || {};
      const figs = g.querySelector(".figs");
      const rates = g.querySelector(".rates");
      let dead = 0;
      if (g.classList.contains("role-dead_letter")) {
        dead = f.ready || 0;
        figs.textContent = num(f.ready) + " dead letter" + (f.ready === 1 ? "" : "s");
        rates.textContent = owners[name] ? "click to inspect" : "";
      } else if (g.classList.contains("role-retry")) {
        figs.textContent = num(f.ready) + " waiting";
        rates.textContent = "";
      } else {
        const row = rows[name] || {};
        dead = row.dead_letters || 0;
        figs.textContent = "ready " + num(f.ready) + " · unacked " + num(f.unacked) +
          " · consumers " + num(f.consumers);
        rates.textContent = "in " + rate(f.publish_rate) + "/s · out " + rate(f.deliver_rate) +
          "/s" + (dead ? " · dead " + dead : "");
      }
      g.classList.toggle("has-dead", dead > 0);
      g.classList.toggle("missing", status.depths[name] === undefined && !rows[name]);
    }
  }

  function updateTable(status) {
    const body = $("queues").tBodies[0];
    body.replaceChildren();
    for (const r of status.queues) {
      const dead = r.dead_letters || 0;
      let deadCell;
      if (r.has_dead_letters) {
        deadCell = el("button", { type: "button", class: "link dead-link", "data-queue": r.queue,
          onclick: () => openDead(r.queue) }, num(r.dead_letters));
      } else {
        deadCell = num(r.dead_letters);
      }
      const tr = el("tr", { "data-queue": r.queue, class: dead ? "has-dead" : "" },
        el("td", {}, r.queue, r.exists ? "" : el("span", { class: "missing" }, " missing")),
        el("td", {}, r.type || "-"),
        el("td", { class: "n ready" }, num(r.ready)),
        el("td", { class: "n unacked" }, num(r.unacked)),
        el("td", { class: "n consumers" }, num(r.consumers)),
        el("td", { class: "n" }, rate(r.publish_rate)),
        el("td", { class: "n" }, rate(r.deliver_rate)),
        el("td", { class: "n" }, num(r.retrying)),
        el("td", { class: "n dead-letters" }, deadCell));
      body.append(tr);
    }
  }

  async function poll() {
    try {
      const status = await api("api/status");
      owners = {};
      deadDepth = {};
      withDead = new Set();
      for (const r of status.queues) {
        if (r.dead_letter_queue && r.has_dead_letters) owners[r.dead_letter_queue] = r.queue;
        deadDepth[r.queue] = r.dead_letters;
        if (r.has_dead_letters) withDead.add(r.queue);
      }
      updateGraph(status);
      updateTable(status);
      $("updated").textContent = "updated " + status.updated.replace("T", " ");
      $("updated").classList.remove("stale");
      const note = $("note");
      note.hidden = !status.note;
      note.textContent = status.note || "";
      if (view.queue && view.page && deadDepth[view.queue] !== view.page.total &&
          !view.loading) {
        loadDead();
      }
    } catch (e) {
      $("updated").textContent = "not updating: " + e.message;
      $("updated").classList.add("stale");
    }
    setTimeout(poll, POLL_MS);
  }

  // ---- dead letters --------------------------------------------------------------------

  function openDead(queue) {
    if (view.queue !== queue) {
      view.queue = queue;
      view.offset = 0;
      view.selected.clear();
    }
    $("dead").hidden = false;
    $("dead-queue").textContent = queue;
    loadDead().then(() => $("dead").scrollIntoView({ behavior: "smooth", block: "start" }));
  }

  async function loadDead() {
    if (!view.queue) return;
    view.loading = true;
    const q = new URLSearchParams({ queue: view.queue, offset: view.offset, limit: PAGE,
      error: view.error, header: view.header });
    try {
      const page = await api("api/dead-letters?" + q);
      if (page.queue !== view.queue) return;
      view.page = page;
      renderDead(page);
    } catch (e) {
      report("dead letters of " + view.queue + ": " + e.message, true);
    } finally {
      view.loading = false;
    }
  }

  function renderDead(page) {
    $("dead-dlq").textContent = "in " + page.dead_letter_queue + (page.shared ? " (shared)" : "");
    const filtered = page.matching !== page.total;
    const first = page.matching ? page.offset + 1 : 0;
    const last = Math.min(page.offset + page.rows.length, page.matching);
    $("dead-summary").textContent = page.total + " dead letter" + (page.total === 1 ? "" : "s") +
      (filtered ? ", " + page.matching + " matching" : "") +
      " · read without consuming in " + page.read_seconds + " s";
    $("page-info").textContent = first + "–" + last + " of " + page.matching;
    $("prev").disabled = page.offset === 0;
    $("next").disabled = page.offset + page.rows.length >= page.matching;
    const body = $("letters").tBodies[0];
    body.replaceChildren();
    if (!page.rows.length) {
      body.append(el("tr", {}, el("td", { colspan: 8, class: "empty" },
        page.total ? "no dead letter matches the filter" : "no dead letters")));
    }
    for (const row of page.rows) body.append(...letterRows(row));
    updateSelection();
  }

  function letterRows(row) {
    const routed = row.exchange === null ? "-" : (row.exchange || "(default)") + " / " + (row.routing_key || "");
    const details = el("tr", { class: "details", hidden: "" },
      el("td", { colspan: 8 }, detailBox(row)));
    const cells = [];
    if (!readOnly) {
      const box = el("input", { type: "checkbox", class: "pick", "data-key": row.key });
      box.checked = view.selected.has(row.key);
      box.addEventListener("change", () => {
        if (box.checked) view.selected.add(row.key); else view.selected.delete(row.key);
        updateSelection();
      });
      cells.push(el("td", { class: "act" }, box));
    }
    const toggle = el("button", { type: "button", class: "link", onclick: () => {
      details.hidden = !details.hidden;
    } }, "details");
    const tools = el("td", { class: "tools" }, toggle);
    if (!readOnly) {
      tools.append(" ", el("button", { type: "button", class: "act replay-one",
        onclick: () => replayKeys([row.key], "dead letter " + (row.message_id || row.key)) },
        "replay"));
    }
    const tr = el("tr", { class: "letter", "data-key": row.key }, ...cells,
      el("td", { class: "n" }, row.position),
      el("td", { class: "id" }, row.message_id || "-"),
      el("td", { class: "error" }, row.error || "-"),
      el("td", { class: "n" }, row.attempt),
      el("td", {}, row.failed_at || "-"),
      el("td", {}, routed),
      tools);
    return [tr, details];
  }

  function detailBox(row) {
    const box = el("div", { class: "detail" });
    box.append(el("h4", {}, "headers"),
      el("pre", { class: "headers" }, JSON.stringify(row.headers, null, 2)),
      el("h4", {}, "body (" + row.size + " bytes, " + (row.content_type || "no content type") +
        (row.body_encoding === "base64" ? ", base64" : "") + ")"),
      el("pre", { class: "body" }, row.body));
    if (row.has_traceback) {
      const pre = el("pre", { class: "traceback", hidden: "" });
      const show = el("button", { type: "button", class: "link show-traceback", onclick: async () => {
        try {
          const tb = await api("api/traceback?" + new URLSearchParams({ queue: view.queue, key: row.key }));
          pre.textContent = tb.traceback;
          pre.hidden = false;
          show.hidden = true;
        } catch (e) { report(e.message, true); }
      } }, "show traceback");
      box.append(show, pre);
    }
    return box;
  }

  function updateSelection() {
    const button = $("replay-selected");
    if (!button) return;
    button.disabled = view.selected.size === 0;
    button.textContent = "replay selected (" + view.selected.size + ")";
  }

  function filterText() {
    const parts = [];
    if (view.error) parts.push('error contains "' + view.error + '"');
    if (view.header) parts.push("header " + view.header);
    return parts.join(" and ");
  }

  function confirmStep(text, okLabel) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  async function act(path, payload, question, okLabel) {
    if (!(await confirmStep(question, okLabel))) {
      report("cancelled: nothing was done");
      return;
    }
    try {
      const result = await post(path, payload);
      report(result.message + (result.failed && result.failed.length ? ": " + result.failed.join("; ") : ""),
        Boolean(result.failed && result.failed.length));
      view.selected.clear();
      view.offset = 0;
    } catch (e) {
      report(e.message, true);
    }
    await loadDead();
  }

  function replayKeys(keys, what) {
    return act("api/replay", { queue: view.queue, keys: keys },
      "Replay " + what + " to " + view.queue + "? It goes back to that queue only, with its attempt count reset.",
      "Replay");
  }

  function wire() {
    $("dead-close").addEventListener("click", () => { $("dead").hidden = true; view.queue = null; });
    $("dead-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      view.error = $("filter-error").value.trim();
      view.header = $("filter-header").value.trim();
      view.offset = 0;
      loadDead();
    });
    $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE); loadDead(); });
    $("next").addEventListener("click", () => { view.offset += PAGE; loadDead(); });
    for (const g of document.querySelectorAll("g.node.queue")) {
      const open = () => {
        const name = g.dataset.queue;
        const queue = owners[name] || (withDead.has(name) && name) || null;
        if (queue) openDead(queue);
      };
      g.addEventListener("click", open);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    }
    if (readOnly) return;
    $("select-page").addEventListener("change", (event) => {
      for (const box of document.querySelectorAll("#letters input.pick")) {
        box.checked = event.target.checked;
        if (box.checked) view.selected.add(box.dataset.key); else view.selected.delete(box.dataset.key);
      }
      updateSelection();
    });
    $("replay-selected").addEventListener("click", () => {
      const n = view.selected.size;
      replayKeys([...view.selected], n + " selected dead letter" + (n === 1 ? "" : "s"));
    });
    $("replay-matching").addEventListener("click", () => {
      const n = view.page ? view.page.matching : 0;
      const which = filterText();
      act("api/replay", { queue: view.queue, all: true, error: view.error, header: view.header },
        "Replay all " + n + " dead letter" + (n === 1 ? "" : "s") + " of " + view.queue +
        (which ? " matching " + which : "") + "? They go back to " + view.queue + " only.",
        "Replay all");
    });
    $("purge").addEventListener("click", () => {
      const n = view.page ? view.page.total : 0;
      act("api/purge", { queue: view.queue },
        "Purge: drop all " + n + " dead letter" + (n === 1 ? "" : "s") + " of " + view.queue +
        " for good? This cannot be undone.", "Purge");
    });
  }

  wire();
  poll();
})();
