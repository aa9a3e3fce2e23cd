// Queue: what the engine runs now and what waits; this key's work in detail, others counted.
import { api } from "./api.js";
import { el, poll } from "./ui.js";

function part(title, id, section) {
  const counts = Object.entries(section.others);
  const rows = section.own.map((work) => el("tr", {},
    el("td", {}, work.position + 1), el("td", {}, work.kind),
    el("td", {}, el("a", { href: `#/run/${encodeURIComponent(work.run_id)}` }, work.run_id)),
    el("td", {}, work.base_model || "—"), el("td", { class: "num" }, work.waited_s.toFixed(2))));
  return el("section", { id, class: "card" },
    el("h2", {}, title),
    rows.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["#", "Kind", "Run", "Base model", "Waited (s)"]
        .map((label) => el("th", {}, label)))),
      el("tbody", {}, rows))) : el("p", { class: "muted" }, "None of your work."),
    el("p", { class: "muted" }, counts.length
      ? `Other work: ${counts.map(([kind, n]) => `${n} ${kind}`).join(", ")}`
      : "No other work."));
}

export function queuePage(main) {
  const status = el("div", { "aria-live": "polite" });
  const body = el("div", { class: "grid2" });
  const workers = el("p", { class: "muted" });
  main.replaceChildren(el("h1", {}, "Queue"), workers, status, body);
  return poll(async () => {
    const queue = await api("/v1/dashboard/queue");
    workers.textContent = `${queue.workers} engine worker${queue.workers === 1 ? "" : "s"}`;
    body.replaceChildren(part("Running now", "queue-running", queue.running),
      part("Waiting", "queue-pending", queue.pending));
  }, 1000, status);
}
