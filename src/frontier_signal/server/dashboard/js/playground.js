// Playground: chat with a run (current weights, a kept step, a checkpoint) or a base model,
// streamed through the OpenAI-compatible /v1/chat/completions; compare two side by side.
import { api, readEvents } from "./api.js";
import { el, errorBox } from "./ui.js";

async function modelOptions() {
  const [models, runs] = await Promise.all([api("/v1/dashboard/models"), api("/v1/dashboard/runs")]);
  const details = await Promise.all(runs.data.map((run) =>
    api(`/v1/dashboard/runs/${encodeURIComponent(run.run_id)}`)));
  const groups = [["Base models", models.data.map((m) => [m.id, m.id])]];
  for (const run of details) {
    const options = [[run.run_id, `${run.run_id} (current, step ${run.step})`]];
    for (const step of run.kept_steps) options.push([`${run.run_id}@${step}`, `${run.run_id} @ step ${step}`]);
    for (const c of run.checkpoints) {
      if (c.kind !== "merged") options.push([`${run.run_id}:${c.checkpoint_id}`, `${run.run_id} : ${c.name}`]);
    }
    groups.push([run.run_id, options]);
  }
  return groups;
}

function select(id, label, groups, chosen) {
  const node = el("select", { id, "aria-label": label },
    ...groups.map(([name, options]) => el("optgroup", { label: name },
      ...options.map(([value, text]) => el("option", { value, selected: value === chosen }, text)))));
  return node;
}

function pane(index, groups, chosen) {
  const picker = select(`model-${index}`, `Model ${index + 1}`, groups, chosen);
  const transcript = el("div", { class: "transcript card", id: `output-${index}`,
    "aria-live": "polite", "data-chunks": "0", "data-done": "false" });
  const box = el("section", { class: "pane" }, el("label", { for: picker.id }, `Model ${index + 1} `),
    picker, transcript);
  return { box, picker, transcript, history: [] };
}

async function stream(view, prompt, params) {
  view.history.push({ role: "user", content: prompt });
  view.transcript.dataset.done = "false";
  view.transcript.append(el("div", { class: "user" }, `You: ${prompt}`));
  const answer = el("div", { class: "assistant" });
  view.transcript.append(answer);
  let chunks = 0;
  try {
    const response = await api("/v1/chat/completions", { method: "POST", raw: true, body: {
      model: view.picker.value, messages: view.history, stream: true, ...params } });
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error.message);
      const delta = event.choices?.[0]?.delta?.content;
      if (delta) {
        answer.textContent += delta;
        chunks += 1;
        view.transcript.dataset.chunks = String(chunks);
      }
    });
    view.history.push({ role: "assistant", content: answer.textContent });
  } catch (error) {
    view.history.pop();
    answer.replaceWith(errorBox(error));
  } finally {
    view.transcript.dataset.done = "true";
  }
}

function number(id, label, value, step, min, max) {
  return el("label", { for: id }, label, el("input", { id, type: "number", value, step, min, max }));
}

export function playgroundPage(main, [chosen]) {
  const status = el("div", { "aria-live": "polite" });
  main.replaceChildren(el("h1", {}, "Playground"), status, el("p", { class: "muted" }, "Loading models…"));
  let alive = true;
  modelOptions().then((groups) => {
    if (!alive) return;
    const views = [pane(0, groups, chosen), pane(1, groups, chosen)];
    const compare = el("input", { type: "checkbox", id: "compare", onchange: () => {
      views[1].box.hidden = !compare.checked;
    } });
    views[1].box.hidden = true;
    const prompt = el("textarea", { id: "prompt", "aria-label": "Message", placeholder: "Say something…" });
    const send = el("button", { type: "submit", class: "primary", id: "send" }, "Send");
    const params = el("div", { class: "row params" },
      number("temperature", "temperature", "0.7", "0.1", "0", "2"),
      number("top_p", "top_p", "1", "0.05", "0", "1"),
      number("max_tokens", "max_tokens", "64", "1", "1", "4096"),
      el("label", { for: "compare" }, compare, "Compare two side by side"),
      el("button", { type: "button", id: "clear", onclick: () => views.forEach((v) => {
        v.history = [];
        v.transcript.replaceChildren();
      }) }, "Clear"));
    const form = el("form", { onsubmit: async (event) => {
      event.preventDefault();
      const text = prompt.value.trim();
      if (!text) return;
      const values = {
        temperature: Number(document.getElementById("temperature").value),
        top_p: Number(document.getElementById("top_p").value),
        max_tokens: Number(document.getElementById("max_tokens").value),
      };
      send.disabled = true;
      const active = compare.checked ? views : [views[0]];
      await Promise.all(active.map((view) => stream(view, text, values)));
      send.disabled = false;
      prompt.value = "";
      prompt.focus();
    } }, params, prompt, el("div", { class: "row" }, send));
    main.replaceChildren(el("h1", {}, "Playground"), status, form,
      el("div", { class: "grid2" }, ...views.map((view) => view.box)));
  }).catch((error) => status.replaceChildren(errorBox(error)));
  return () => { alive = false; };
}
