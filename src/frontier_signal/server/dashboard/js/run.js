// A run: live curves (polled with an `after=` step cursor), checkpoints with download, kept
// sampler steps, config and effective settings, and its recent requests.
import { api, headers } from "./api.js";
import { bytes, el, errorBox, number, poll, time } from "./ui.js";

const CURVES = [
  ["loss", "Loss", "#2456c7"], ["grad_norm", "Gradient norm", "#c75a24"],
  ["learning_rate", "Learning rate", "#1f7a3a"], ["tokens_per_s", "Tokens/s", "#8a3fc7"],
];

// Whole steps only on the x axis.
const STEP_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

function chart(key, label, color) {
  const box = el("div", { class: "chart card", id: `chart-${key}`, "data-points": "0",
    role: "img", "aria-label": `${label} per step` }, el("h3", {}, label));
  const plot = new uPlot({
    width: 300, height: 180, scales: { x: { time: false } }, legend: { show: false },
    series: [{ label: "step" }, { label, stroke: color, width: 2, spanGaps: true,
      points: { size: 4 } }],
    axes: [{ stroke: "currentColor", incrs: STEP_TICKS }, { stroke: "currentColor", size: 60 }],
  }, [[], []], box);
  return { key, box, plot };
}

async function download(runId, checkpoint, button, where) {
  button.disabled = true;
  try {
    const path = `/v1/runs/${encodeURIComponent(runId)}/checkpoints/` +
      `${encodeURIComponent(checkpoint.checkpoint_id)}/archive`;
    const response = await fetch(path, { headers: headers() });
    if (!response.ok) throw new Error(`download failed: ${response.status}`);
    const blob = await response.blob();
    const link = el("a", { href: URL.createObjectURL(blob),
      download: `${runId}-${checkpoint.checkpoint_id}.tar.gz` });
    document.body.append(link);
    link.click();
    link.remove();
    button.dataset.downloaded = String(blob.size);
    where.textContent = `Downloaded ${bytes(blob.size)} (a PEFT adapter folder, tar.gz).`;
  } catch (error) {
    where.replaceChildren(errorBox(error));
  } finally {
    button.disabled = false;
  }
}

function table(columns, rows, id) {
  return el("div", { class: "table-wrap" }, el("table", { id },
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.length ? rows
      : el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, "None yet.")))));
}

function details(run, files, note) {
  const checkpoints = run.checkpoints.map((c) => {
    const button = el("button", { type: "button", "data-download": c.checkpoint_id,
      onclick: () => download(run.run_id, c, button, note) }, "Download");
    const chat = el("a", { href: `#/playground/${encodeURIComponent(`${run.run_id}:${c.checkpoint_id}`)}` }, "Chat");
    return el("tr", {}, el("td", {}, c.name), el("td", {}, c.kind), el("td", { class: "num" }, c.step),
      el("td", { class: "num" }, bytes(c.size)), el("td", {}, time(c.created_at)),
      el("td", {}, el("div", { class: "row" }, button, c.kind === "merged" ? null : chat)));
  });
  const requests = run.requests.map((r) => el("tr", {},
    el("td", {}, r.kind), el("td", { class: `status-${r.status}` }, r.status),
    el("td", {}, time(r.created_at)),
    el("td", { class: "num" }, r.duration_s === null ? "—" : `${r.duration_s.toFixed(2)} s`),
    el("td", {}, r.error || "")));
  files.replaceChildren(
    el("h2", {}, "Checkpoints"), note,
    table(["Name", "Kind", "Step", "Size", "Saved", ""], checkpoints, "checkpoints"),
    el("h2", {}, "Kept sampler steps"),
    el("p", { id: "kept-steps" }, ...run.kept_steps.map((step) => el("a", {
      class: "badge", href: `#/playground/${encodeURIComponent(`${run.run_id}@${step}`)}`,
    }, `step ${step}`)).flatMap((link) => [link, " "])),
    el("div", { class: "grid2" },
      el("section", {}, el("h2", {}, "Config"), el("pre", { id: "run-config" },
        JSON.stringify(run.config, null, 2))),
      el("section", {}, el("h2", {}, "Effective settings"), el("pre", {},
        JSON.stringify(run.effective, null, 2)))),
    el("h2", {}, "Recent requests"),
    table(["Kind", "Status", "Started", "Duration", "Error"], requests, "requests"),
  );
}

export function runPage(main, [runId]) {
  const status = el("div", { "aria-live": "polite" });
  const summary = el("p", { class: "muted", id: "run-summary" });
  const charts = CURVES.map(([key, label, color]) => chart(key, label, color));
  const files = el("div");
  const note = el("p", { class: "muted", "aria-live": "polite", id: "download-note" });
  main.replaceChildren(
    el("h1", {}, runId), summary, status,
    el("p", {}, el("a", { href: `#/playground/${encodeURIComponent(runId)}` }, "Chat with this run")),
    el("div", { class: "charts" }, ...charts.map((c) => c.box)), files,
  );
  const points = [];
  let after = -1;

  function resize() {
    for (const c of charts) c.plot.setSize({ width: Math.max(200, c.box.clientWidth - 24), height: 180 });
  }
  window.addEventListener("resize", resize);
  resize();

  const stopCurves = poll(async () => {
    const answer = await api(`/v1/dashboard/runs/${encodeURIComponent(runId)}/metrics?after=${after}`);
    if (answer.step < after) { // the run went back to an earlier state: start over
      points.length = 0;
      after = -1;
      return;
    }
    if (!answer.data.length) return;
    points.push(...answer.data);
    after = points[points.length - 1].step;
    const steps = points.map((p) => p.step);
    for (const c of charts) {
      c.plot.setData([steps, points.map((p) => p[c.key])]);
      c.box.dataset.points = String(points.length);
      c.box.dataset.steps = steps.join(",");
    }
  }, 1000, status);

  const stopDetails = poll(async () => {
    const run = await api(`/v1/dashboard/runs/${encodeURIComponent(runId)}`);
    summary.textContent = `${run.face} run on ${run.base_model} · LoRA rank ${run.lora_rank} · ` +
      `step ${run.step} · last loss ${number(run.last_loss)} · ${number(run.tokens_per_s)} tokens/s ` +
      `· created ${time(run.created_at)} · updated ${time(run.updated_at)}`;
    if (!files.contains(document.activeElement)) details(run, files, note);
  }, 4000, null);

  return () => {
    stopCurves();
    stopDetails();
    window.removeEventListener("resize", resize);
  };
}
