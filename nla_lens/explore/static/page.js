// The explorer page: the widget's own front end (explorer.js), given an HTTP stand-in
// for the anywidget model. Requests carry the session token; the stream is NDJSON.
import explorer from "./explorer.js";

const token = new URLSearchParams(window.location.search).get("token") || "";
const headers = { "X-NLA-Token": token };

function httpModel(initial) {
  let state = initial;
  const listeners = {};
  const emit = (name, msg) => (listeners[name] || []).forEach((cb) => cb(msg));
  async function fail(response, index) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    emit("msg:custom", { type: "error", index, message });
  }
  return {
    get: (name) => (name === "state" ? state : undefined),
    on: (name, cb) => { (listeners[name] = listeners[name] || []).push(cb); },
    off: (name, cb) => { listeners[name] = (listeners[name] || []).filter((f) => f !== cb); },
    async send(msg) {
      if (msg.type === "state") {
        const r = await fetch(`/api/state?view=${encodeURIComponent(msg.view)}`, { headers });
        if (!r.ok) return fail(r, null);
        state = await r.json();
        emit("msg:custom", { type: "state", state });
        return;
      }
      const r = await fetch("/api/explain", {
        method: "POST",
        headers: { ...headers, "Content-Type": "application/json" },
        body: JSON.stringify(msg),
      });
      if (!r.ok) return fail(r, msg.index);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 1);
          if (line.trim()) emit("msg:custom", JSON.parse(line));
        }
      }
    },
  };
}

async function main() {
  const el = document.getElementById("app");
  const r = await fetch("/api/state", { headers });
  if (!r.ok) {
    el.textContent = `The explorer refused to load: ${(await r.json()).error}`;
    return;
  }
  el.textContent = "";
  explorer.render({ model: httpModel(await r.json()), el });
}

main();
