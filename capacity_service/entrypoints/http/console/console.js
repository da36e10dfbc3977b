// The console's shell: the route in the URL's fragment (#/ the grid, #/pool/<id> a pool's page), the admin
// key, the live indicator, confirmations, and errors in words. The page itself holds no data: everything is
// read from the API with the key.
import { ApiError, adminKey, forgetAdminKey, inWords, setAdminKey } from "./api.js";
import { h } from "./dom.js";
import { showGrid } from "./grid.js";
import { showPool } from "./pool.js";

const main = document.getElementById("main");
const errorBanner = document.getElementById("error");
const live = document.getElementById("live");
const where = document.getElementById("where");
const forgetKey = document.getElementById("forget-key");
let leave = () => {};

const ui = {
  // The availability stream's state: "live", "connecting", or the error that stopped it.
  setLive(state) {
    if (state instanceof ApiError) {
      live.dataset.state = "off";
      live.textContent = "not live";
      ui.fail(state);
      return;
    }
    live.dataset.state = state;
    live.textContent = state === "live" ? "live" : "connecting…";
    if (state === "live") hideError();
  },

  // Say what went wrong, in words. A missing or refused key asks for one, then runs ``retry``. With
  // ``place``, the error replaces its content (a page that could not load is never left blank).
  fail(error, retry = null, place = null) {
    if (error instanceof ApiError && needsKey(error)) {
      askForKey(error, retry ?? route);
      return;
    }
    errorBanner.textContent = inWords(error);
    errorBanner.hidden = false;
    if (place !== null) {
      place.replaceChildren(
        h(
          "section",
          { class: "panel" },
          h("h2", {}, "This page could not be shown"),
          h("p", {}, inWords(error)),
          retry ? h("button", { onclick: () => (hideError(), retry()) }, "Try again") : null,
        ),
      );
    }
  },

  // Ask before acting. With ``input``, the answer is what was typed; "" without; null when cancelled.
  confirm({ text, input = null, ok = "Confirm" }) {
    const dialog = document.getElementById("confirm");
    const field = document.getElementById("confirm-field");
    const box = document.getElementById("confirm-input");
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = ok;
    field.hidden = input === null;
    box.disabled = input === null;
    if (input !== null) {
      document.getElementById("confirm-label").textContent = input.label;
      box.type = input.type ?? "text";
      box.required = Boolean(input.required);
      box.min = input.min ?? "";
      box.value = input.value ?? "";
    }
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => resolve(dialog.returnValue === "ok" ? (input === null ? "" : box.value) : null),
        { once: true },
      );
    });
  },
};

function needsKey(error) {
  // A 403 without a key is the loopback rule of a service without keys: no key would help.
  return error.status === 401 || (error.status === 403 && adminKey() !== null);
}

function askForKey(error, then) {
  const dialog = document.getElementById("key-dialog");
  if (dialog.open) return; // asked already (the page's calls and its stream fail together)
  const input = document.getElementById("key-input");
  document.getElementById("key-text").textContent =
    error.status === 401 ? "This service needs an admin key." : `That key was refused: ${error.message}`;
  input.value = "";
  dialog.addEventListener(
    "close",
    () => {
      if (input.value) setAdminKey(input.value);
      showKeyButton();
      then();
    },
    { once: true },
  );
  dialog.showModal();
}

function hideError() {
  errorBanner.hidden = true;
  errorBanner.textContent = "";
}

function showKeyButton() {
  forgetKey.hidden = adminKey() === null;
}

function route() {
  leave();
  hideError();
  live.dataset.state = "off";
  live.textContent = "not connected";
  main.replaceChildren(h("p", { class: "loading" }, "Loading…")); // nothing of the page left behind
  const poolId = poolOfLocation();
  if (poolId === null) {
    where.textContent = "Grid";
    leave = showGrid(main, ui);
  } else {
    where.textContent = `Pool ${poolId}`;
    leave = showPool(main, poolId, ui);
  }
}

function poolOfLocation() {
  const encoded = location.hash.match(/^#\/pool\/(.+)$/)?.[1];
  try {
    return encoded === undefined ? null : decodeURIComponent(encoded);
  } catch {
    return encoded; // not percent-encoded after all: the service will say whether such a pool exists
  }
}

forgetKey.addEventListener("click", () => {
  forgetAdminKey();
  showKeyButton();
  route();
});
window.addEventListener("hashchange", route);
showKeyButton();
route();
