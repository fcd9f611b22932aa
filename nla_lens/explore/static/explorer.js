// nla-lens explorer front end: one ES module for the web page and the notebook widget.
// `render({model, el})` is anywidget's contract; the page passes an HTTP stand-in
// (page.js). Requests go out with model.send({type: "explain" | "state", ...}); the
// answers arrive as "msg:custom" messages: start, delta, segment, finished, error, state.
// Only textContent is written from data: no HTML from the server is ever parsed.

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x, digits = 3) {
  return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits);
}

function fveColour(fve) {
  if (fve === null || fve === undefined) return "#eeeeee";
  const hue = Math.max(0, Math.min(1, fve)) * 120;
  return `hsl(${hue.toFixed(0)}, 70%, 85%)`;
}

function cellColour(v, lo, hi) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "#eeeeee";
  const t = Math.max(-1, Math.min(1, v >= 0 ? v / hi : -v / lo));
  const hue = t > 0 ? 0 : 220;
  return `hsl(${hue},70%,${(100 - 45 * Math.abs(t)).toFixed(0)}%)`;
}

function scoreText(m) {
  return `cos ${fmt(m.cos)} · fve_nrm ${fmt(m.fve_nrm)}`;
}

function render({ model, el }) {
  let state = model.get("state");
  let current = null; // index of the token being shown
  const root = h("div", "nla-explorer");
  el.appendChild(root);

  const head = h("div", "nla-head");
  const strip = h("div", "nla-strip");
  strip.setAttribute("data-testid", "strip");
  const panel = h("div", "nla-panel");
  panel.setAttribute("data-testid", "explanation");
  const grid = h("div", "nla-grid");
  grid.setAttribute("data-testid", "patching");
  root.append(head, strip, panel, grid);

  function drawHead() {
    head.textContent = "";
    const v = state.view;
    const title = h("div", "nla-title");
    title.append(h("b", null, "nla-lens explore"), h("span", null, ` ${v.title}`));
    head.appendChild(title);
    if (state.views.length > 1) {
      const pick = h("select", "nla-views");
      for (const name of state.views) {
        const o = h("option", null, name);
        o.value = name;
        o.selected = name === v.name;
        pick.appendChild(o);
      }
      pick.addEventListener("change", () => model.send({ type: "state", view: pick.value }));
      head.appendChild(pick);
    }
    const notes = h("div", "nla-notes");
    notes.appendChild(h("div", "nla-baseline",
      state.baseline ? `fve_nrm against ${state.baseline}` : "fve_nrm: no baseline"));
    if (v.fit) {
      const fits = v.fit.fits;
      const flag = h("div", "nla-fit " + (fits === false ? "nla-fit-bad" : fits ? "nla-fit-ok" : ""),
        fits === false ? `BASELINE DOES NOT FIT (vectors spread ${fmt(v.fit.ratio, 2)}x the baseline)`
          : fits ? `baseline fits (${fmt(v.fit.ratio, 2)}x)` : v.fit.message);
      flag.setAttribute("data-testid", "fit");
      flag.title = v.fit.message;
      notes.appendChild(flag);
    }
    if (!v.live && v.strip.length) notes.appendChild(h("div", "nla-note", "saved explanations (not recomputed)"));
    head.appendChild(notes);
  }

  function drawStrip() {
    strip.textContent = "";
    let section = null;
    for (const t of state.view.strip) {
      if (t.section !== section) {
        section = t.section;
        strip.appendChild(h("span", "nla-section", section));
      }
      const tok = h("span", "nla-tok nla-" + t.section, t.token.replace(/\n/g, "⏎"));
      tok.setAttribute("data-index", t.index);
      tok.title = `position ${t.position}` + (t.flags.length ? ` | flags: ${t.flags.join(", ")}` : "");
      if (t.flags.length) tok.classList.add("nla-noisy");
      if (t.saved) tok.style.background = fveColour(t.saved.fve_nrm);
      tok.addEventListener("click", () => choose(t.index));
      strip.appendChild(tok);
    }
  }

  function showSaved(t) {
    panel.textContent = "";
    panel.appendChild(h("div", "nla-panel-head", `token ${JSON.stringify(t.token)} (position ${t.position}): saved`));
    panel.appendChild(h("pre", "nla-text", t.saved.text));
    const s = h("div", "nla-final", scoreText(t.saved));
    s.setAttribute("data-testid", "final");
    panel.appendChild(s);
  }

  function choose(index) {
    const t = state.view.strip[index];
    current = index;
    for (const node of strip.querySelectorAll(".nla-tok")) {
      node.classList.toggle("nla-selected", Number(node.getAttribute("data-index")) === index);
    }
    if (!state.view.live) {
      if (t.saved) showSaved(t);
      return;
    }
    panel.textContent = "";
    panel.appendChild(h("div", "nla-panel-head", `token ${JSON.stringify(t.token)} (position ${t.position})`));
    part("nla-status").textContent = "explaining…";
    model.send({ type: "explain", view: state.view.name, index });
  }

  function part(cls) {
    let node = panel.querySelector("." + cls);
    if (!node) {
      node = h(cls === "nla-segments" ? "ol" : cls === "nla-live" ? "pre" : "div", cls);
      node.setAttribute("data-testid", cls.slice(4));
      panel.appendChild(node);
    }
    return node;
  }

  function onMessage(msg) {
    if (msg.type === "state") {
      state = msg.state;
      current = null;
      panel.textContent = "";
      drawAll();
      return;
    }
    if (msg.index !== current && msg.type !== "error") return; // a token clicked before
    const status = part("nla-status");
    if (msg.type === "start") {
      status.textContent = "explaining…";
    } else if (msg.type === "delta") {
      part("nla-live").textContent = msg.text;
    } else if (msg.type === "segment") {
      const li = h("li", "nla-segment");
      li.append(h("span", "nla-seg-text", msg.segment),
        h("span", "nla-score", `prefix 1–${msg.segment_index + 1}: ${scoreText(msg)}`));
      li.style.borderLeftColor = fveColour(msg.fve_nrm);
      li.setAttribute("data-segment", String(msg.segment_index));
      const list = part("nla-segments");
      const before = list.querySelector(`li[data-segment="${msg.segment_index}"]`);
      if (before) before.replaceWith(li); // a last line scored again with its row
      else list.appendChild(li);
      status.textContent = `segment ${msg.segment_index + 1} scored…`;
    } else if (msg.type === "finished") {
      part("nla-live").textContent = msg.text;
      const fin = part("nla-final");
      fin.textContent = `explanation: ${scoreText(msg)} · mse_nrm ${fmt(msg.mse_nrm)}`
        + (msg.baseline ? ` (fve_nrm against ${msg.baseline})` : "");
      status.textContent = msg.cut_short ? "done (cut short by stop=)" : msg.truncated ? "done (truncated: raise max_new_tokens)" : "done";
      const tok = strip.querySelector(`.nla-tok[data-index="${msg.index}"]`);
      if (tok) tok.style.background = fveColour(msg.fve_nrm);
    } else if (msg.type === "error") {
      const err = h("div", "nla-error", msg.message);
      err.setAttribute("data-testid", "error");
      (msg.index === current ? panel : head).appendChild(err);
    }
  }

  function drawGrid() {
    grid.textContent = "";
    const p = state.view.patching;
    if (!p) return;
    grid.appendChild(h("div", "nla-grid-head",
      `activation patching: ${p.value} per patched layer (rows) and position (columns); click a cell for its explanations; dashed = after layer K`));
    const table = h("table", "nla-grid-table");
    const top = h("tr");
    top.appendChild(h("th", null, "layer \\ pos"));
    for (const pos of p.positions) {
      const th = h("th");
      th.append(h("div", null, pos), h("code", null, p.tokens[String(pos)] ?? ""));
      top.appendChild(th);
    }
    table.appendChild(top);
    const cells = new Map(p.cells.map((c) => [`${c.layer}:${c.position}`, c]));
    const detail = h("div", "nla-cell-panel");
    detail.setAttribute("data-testid", "cell");
    for (const layer of p.layers) {
      const tr = h("tr");
      tr.appendChild(h("th", null, layer));
      for (const pos of p.positions) {
        const c = cells.get(`${layer}:${pos}`);
        const td = h("td", "nla-cell", c ? fmt(c[p.value]) : "");
        if (c) {
          td.style.background = cellColour(c[p.value], p.range[0], p.range[1]);
          if (c.downstream_of_k) td.classList.add("nla-after-k");
          td.addEventListener("click", () => showCell(detail, p, c));
        }
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    grid.append(table, detail);
  }

  function showCell(detail, p, c) {
    detail.textContent = "";
    detail.appendChild(h("div", "nla-panel-head",
      `layer ${c.layer}, position ${c.position} ${JSON.stringify(c.token ?? "")}: metric ${fmt(c.metric)}`
        + (c.effect !== undefined ? `, effect ${fmt(c.effect)}` : "") + `, ${scoreText(c)}`));
    for (const col of p.columns) {
      const box = h("div", "nla-cell-expl");
      box.setAttribute("data-column", col);
      box.append(h("div", "nla-col", col.replace(/_/g, " ")), h("pre", "nla-text", c.explanations[col] ?? "(none)"));
      detail.appendChild(box);
    }
  }

  function drawAll() {
    drawHead();
    drawStrip();
    drawGrid();
  }

  const onChange = () => { state = model.get("state"); drawAll(); };
  model.on("msg:custom", onMessage);
  model.on("change:state", onChange);
  drawAll();
  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:state", onChange);
  };
}

export default { render };
