// Runs: every run of this key, sortable and filterable; deleting asks first.
import { api } from "./api.js";
import { el, errorBox, number, poll, time } from "./ui.js";

const COLUMNS = [
  ["run_id", "Run"], ["face", "Face"], ["base_model", "Base model"], ["lora_rank", "Rank", true],
  ["step", "Step", true], ["last_loss", "Last loss", true], ["tokens_per_s", "Tokens/s", true],
  ["status", "Status"], ["created_at", "Created"], ["updated_at", "Updated"],
];

function cell(run, key, numeric) {
  const value = run[key];
  if (key === "run_id") return el("a", { href: `#/run/${encodeURIComponent(value)}` }, value);
  if (key.endsWith("_at")) return time(value);
  if (key === "face") return el("span", { class: "badge" }, value);
  if (numeric && key !== "step" && key !== "lora_rank") return number(value);
  return value ?? "—";
}

export function runsPage(main) {
  let runs = [];
  let sortKey = "created_at";
  let descending = true;
  const filter = el("input", {
    id: "runs-filter", type: "search", placeholder: "Filter by id, model, face, status",
    "aria-label": "Filter runs", oninput: () => render(),
  });
  const status = el("div", { "aria-live": "polite" });
  const body = el("tbody");
  const head = el("tr");
  const table = el("table", { id: "runs-table" }, el("thead", {}, head), body);
  main.replaceChildren(
    el("h1", {}, "Runs"), el("div", { class: "row" }, filter), status,
    el("div", { class: "table-wrap" }, table),
  );

  function header() {
    head.replaceChildren(...COLUMNS.map(([key, label, numeric]) => {
      const sort = key === sortKey ? (descending ? "descending" : "ascending") : null;
      const button = el("button", { type: "button", "data-sort": key, onclick: () => {
        descending = key === sortKey ? !descending : numeric || key.endsWith("_at");
        sortKey = key;
        render();
      } }, label, sort ? (descending ? " ▼" : " ▲") : "");
      return el("th", { class: numeric ? "num" : null, "aria-sort": sort }, button);
    }), el("th", {}, el("span", { class: "muted" }, "Actions")));
  }

  async function remove(run) {
    if (!window.confirm(`Delete run ${run.run_id}? Its checkpoints stop being served.`)) return;
    try {
      await api(`/v1/runs/${encodeURIComponent(run.run_id)}`, { method: "DELETE" });
      await load();
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  }

  function render() {
    header();
    const words = filter.value.trim().toLowerCase();
    const shown = runs.filter((run) => !words || ["run_id", "base_model", "face", "status"]
      .some((key) => String(run[key]).toLowerCase().includes(words)));
    shown.sort((a, b) => {
      const x = a[sortKey] ?? -Infinity;
      const y = b[sortKey] ?? -Infinity;
      const order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    body.replaceChildren(...shown.map((run) => el("tr", { "data-run": run.run_id },
      ...COLUMNS.map(([key, , numeric]) => el("td", { class: numeric ? "num" : null },
        cell(run, key, numeric))),
      el("td", {}, el("button", { type: "button", class: "danger", "data-delete": run.run_id,
        onclick: () => remove(run) }, "Delete")),
    )));
    if (!shown.length) {
      body.append(el("tr", {}, el("td", { colspan: COLUMNS.length + 1, class: "muted" },
        runs.length ? "No run matches the filter." : "No runs yet: create one with the SDK.")));
    }
  }

  let last = "";
  async function load() {
    const data = (await api("/v1/dashboard/runs")).data;
    const text = JSON.stringify(data);
    if (text === last) return; // unchanged: keep the rows (and the keyboard focus) as they are
    last = text;
    runs = data;
    render();
  }

  return poll(load, 3000, status);
}
