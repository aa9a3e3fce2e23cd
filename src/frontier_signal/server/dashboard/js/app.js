// The dashboard's shell: sign-in with an API key, the hash router and the navigation.
// Pages are functions (main, params) → cleanup, so a page's polling stops when it is left.
import { api, clearKey, getKey, setKey } from "./api.js";
import { playgroundPage } from "./playground.js";
import { queuePage } from "./queue.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";
import { el } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;
let session = null;

function signInPage(message) {
  nav.hidden = true;
  const input = el("input", {
    id: "api-key", type: "password", autocomplete: "off", required: true,
    placeholder: "sk-fs-…", "aria-describedby": "signin-help",
  });
  const status = el("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const form = el("form", { class: "card signin", onsubmit: async (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    await start();
  } },
    el("h1", {}, "Sign in"),
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit", class: "primary", id: "sign-in" }, "Sign in"),
    el("p", { id: "signin-help", class: "muted" },
      "Create one with `frontier-signal keys create --name NAME`. It stays in this tab only."),
    status,
  );
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  const tried = getKey() !== "";
  let answer;
  try {
    answer = await api("/v1/dashboard/session");
  } catch (error) {
    session = null;
    signInPage(`The server did not answer: ${error.message}`);
    return;
  }
  if (!answer.signed_in) {
    session = null;
    clearKey();
    signInPage(tried ? `That key was refused: ${answer.message}` : "");
    return;
  }
  session = answer;
  nav.hidden = false;
  document.getElementById("sign-out").hidden = session.no_auth;
  route();
}

const ROUTES = [
  [/^#\/run\/([^/]+)$/, runPage, "runs"],
  [/^#\/playground(?:\/(.*))?$/, playgroundPage, "playground"],
  [/^#\/queue$/, queuePage, "queue"],
  [/^#?\/?(?:runs)?$/, runsPage, "runs"],
];

function route() {
  if (!session) return;
  if (location.hash && !location.hash.startsWith("#/")) return; // an in-page anchor (#main)
  if (cleanup) cleanup();
  cleanup = null;
  const hash = location.hash || "#/runs";
  for (const [pattern, page, name] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of nav.querySelectorAll("a")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    cleanup = page(main, match.slice(1).map((part) => part && decodeURIComponent(part)));
    return;
  }
  main.replaceChildren(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/runs" }, "Runs")));
}

document.getElementById("sign-out").addEventListener("click", () => {
  clearKey();
  session = null;
  if (cleanup) cleanup();
  signInPage("");
});
window.addEventListener("hashchange", route);
start();
