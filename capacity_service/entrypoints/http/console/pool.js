// A pool's page: the pool as its journal has it (now, or at any past moment with the time slider), its holds,
// waitlist, reservations and events, and the operator's actions on it. Every action is a command the pool's
// single writer decides and records as an event: the page shows it in the history as soon as it is answered.
import { ApiError, call, path, watchZones } from "./api.js";
import { h, table, utc } from "./dom.js";

const LISTED = 50; // of each list, per call

export function showPool(main, poolId, ui) {
  let history = null; // the latest answer of GET .../history
  let olderEvents = []; // pages of events before history.events, as "Older events" brought them
  let at = null; // the moment shown; null: now
  let wanted = null; // the moment asked for last
  let loading = false; // one call at a time: a moment asked meanwhile waits for it (``next``)
  let next;
  let refreshAfter = 0; // live refreshes: at most one a second, whatever the pool's write rate
  let stopStream = () => {};
  let sliderWait = null;
  let refreshWait = null;
  let left = false; // the operator went to another page: answers that come late change nothing here

  async function load(moment) {
    wanted = moment;
    if (loading) {
      next = moment;
      return;
    }
    loading = true;
    const query = new URLSearchParams({ limit: LISTED, ...(moment === null ? {} : { at: moment }) });
    try {
      const answer = await call("GET", `${path("v1/admin/pools/{}/history", poolId)}?${query}`);
      if (left) return;
      if (next === undefined) show(answer, moment);
    } catch (error) {
      if (left) return;
      if (error instanceof ApiError && error.code === "pool_not_found") notFound();
      else if (history === null) ui.fail(error, () => load(moment), main);
      else ui.fail(error);
    } finally {
      loading = false;
    }
    if (next !== undefined) {
      const moment = next;
      next = undefined;
      await load(moment);
    }
  }

  function show(answer, moment) {
    const firstLoad = history === null;
    history = answer;
    at = moment;
    olderEvents = [];
    refreshAfter = Date.now() + 1000;
    if (firstLoad && answer.pool) stopStream = watchZones([answer.pool.zone], onPool, ui.setLive);
    render();
  }

  function onPool(pool) {
    // The cache tells that the pool changed: read it again (unless the past is shown).
    if (pool.pool_id !== poolId || wanted !== null || !history.pool || pool.version <= history.pool.version) return;
    clearTimeout(refreshWait);
    refreshWait = setTimeout(() => wanted === null && load(null), Math.max(0, refreshAfter - Date.now()));
  }

  function notFound() {
    main.replaceChildren(
      h(
        "section",
        { class: "panel", id: "not-found" },
        h("h2", {}, "No such pool"),
        h(
          "p",
          {},
          `There is no pool named “${poolId}”: it was never created `,
          "(only PUT /v1/pools/{pool_id} creates one).",
        ),
        h("p", {}, h("a", { href: "#/" }, "Back to the grid")),
      ),
    );
  }

  function render() {
    const pool = history.pool;
    main.replaceChildren(
      h(
        "section",
        { class: "panel", id: "pool", dataset: { pool: poolId } },
        heading(pool),
        pool ? stats(pool) : absent(),
        actions(pool),
      ),
      h("section", { class: "panel" }, h("h2", {}, "History"), slider()),
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel" }, h("h2", {}, "Holds"), holds()),
        h("section", { class: "panel" }, h("h2", {}, "Waitlist"), waitlist()),
      ),
      h("section", { class: "panel" }, h("h2", {}, "Recent reservations"), reservations()),
      h("section", { class: "panel" }, h("h2", {}, "Events, newest first"), events()),
    );
  }

  function heading(pool) {
    const badges = [];
    if (at !== null) badges.push(h("span", { class: "badge past", id: "past" }, `as it was at ${utc(at, true)} UTC`));
    if (history.paused_reason !== null) {
      badges.push(h("span", { class: "badge paused", id: "paused" }, `paused: ${history.paused_reason}`));
    }
    if (pool?.state === "retired") badges.push(h("span", { class: "badge retired", id: "retired" }, "retired"));
    const slot = pool?.slot_start ? ` · slot ${utc(pool.slot_start)} – ${utc(pool.slot_end)} UTC` : "";
    return [
      h("h2", {}, poolId, " ", badges),
      h("p", { class: "muted" }, pool ? `zone ${pool.zone}${slot}` : ""),
    ];
  }

  function stats(pool) {
    const stat = (name, value) =>
      h(
        "div",
        { class: "stat" },
        h("div", { class: "value", id: name }, String(value)),
        h("div", { class: "label" }, name),
      );
    return h(
      "div",
      { class: "stats" },
      stat("capacity", pool.capacity),
      stat("reserved", pool.reserved),
      stat("remaining", pool.remaining),
      stat("waiting", pool.waiting),
      stat("version", pool.version),
    );
  }

  function absent() {
    return h("p", { id: "absent" }, "The pool did not exist yet at this moment.");
  }

  function actions(pool) {
    const now = at === null && pool !== null;
    const live = now && pool.state !== "retired";
    const act = (id, text, run, enabled, danger = false) =>
      h("button", { id, class: danger ? "danger" : null, disabled: !enabled, onclick: run }, text);
    return h(
      "div",
      { class: "toolbar" },
      history.paused_reason === null
        ? act("pause", "Pause…", pause, now)
        : act("resume", "Resume…", resume, now),
      act("change-capacity", "Change capacity…", changeCapacity, live),
      act("retire", "Retire…", retire, live, true),
      at === null ? null : h("span", { class: "muted" }, "Go back to now to act on the pool."),
    );
  }

  function slider() {
    const first = Date.parse(history.first_recorded_at);
    const last = Math.max(Date.parse(history.last_recorded_at), at === null ? Date.now() : Date.parse(at));
    const input = h("input", {
      type: "range",
      id: "time",
      min: first,
      max: last,
      step: 1,
      value: at === null ? last : Math.floor(Date.parse(at)),
      "aria-label": "the moment the pool is shown at",
    });
    const label = h("span", { id: "time-label" }, momentText(input.value, last));
    const moveTo = () => {
      label.textContent = momentText(input.value, last);
      clearTimeout(sliderWait);
      const value = Number(input.value);
      // The end of the millisecond: the journal's times have microseconds.
      const moment = value >= last ? null : new Date(value).toISOString().replace("Z", "999Z");
      sliderWait = setTimeout(() => load(moment), 150);
    };
    input.addEventListener("input", moveTo);
    input.addEventListener("change", moveTo);
    return [
      h(
        "div",
        { class: "slider" },
        h("span", { class: "muted" }, utc(history.first_recorded_at, true)),
        input,
        h("button", { id: "now", disabled: at === null, onclick: () => load(null) }, "Now"),
      ),
      h(
        "p",
        {},
        label,
        ` · after event ${history.seq_nr} of ${history.last_seq_nr}`,
        h("span", { class: "muted" }, " (times are when the journal recorded each event, UTC)"),
      ),
    ];
  }

  function momentText(value, last) {
    return Number(value) >= last ? "Now" : `At ${utc(new Date(Number(value)).toISOString(), true)}`;
  }

  function holds() {
    const rows = history.holds.map((hold) =>
      h(
        "tr",
        {},
        h("td", { class: "data" }, hold.reservation_id),
        h("td", {}, hold.quantity),
        h("td", { class: "time" }, utc(hold.expires_at, true)),
      ),
    );
    return table(["reservation", "units", "expires at (UTC)"], rows, "No holds.");
  }

  function waitlist() {
    const rows = history.waitlist.map((entry) =>
      h(
        "tr",
        {},
        h("td", {}, entry.position),
        h("td", { class: "data" }, entry.request_id),
        h("td", {}, entry.quantity),
      ),
    );
    return table(["place", "request id", "units"], rows, "Nobody waits.");
  }

  function reservations() {
    const rows = history.reservations.map((reservation) =>
      h(
        "tr",
        {},
        h("td", { class: "data" }, reservation.reservation_id),
        h("td", {}, reservation.quantity),
        h("td", {}, reservation.status),
      ),
    );
    return table(["reservation", "units", "status"], rows, "No reservations.");
  }

  function events() {
    const all = [...history.events, ...olderEvents];
    const rows = all.map((event) =>
      h(
        "tr",
        { dataset: { type: event.type } },
        h("td", {}, event.seq_nr),
        h("td", { class: "time" }, utc(event.recorded_at, true)),
        h("td", {}, event.type),
        h("td", { class: "data" }, JSON.stringify(event.data)),
      ),
    );
    const oldest = all.length ? all[all.length - 1].seq_nr : 1;
    return [
      table(["#", "recorded at (UTC)", "event", "data"], rows, "No events yet at this moment."),
      oldest > 1 ? h("button", { id: "older", onclick: () => loadOlder(oldest) }, "Older events") : null,
    ];
  }

  async function loadOlder(before) {
    const query = new URLSearchParams({ limit: LISTED, before, ...(at === null ? {} : { at }) });
    try {
      const page = await call("GET", `${path("v1/admin/pools/{}/history", poolId)}?${query}`);
      if (left) return;
      olderEvents = [...olderEvents, ...page.events];
      render();
    } catch (error) {
      if (!left) ui.fail(error);
    }
  }

  async function act(method, route, body) {
    try {
      await call(method, path(route, poolId), body);
    } catch (error) {
      if (!left) ui.fail(error);
    }
    if (!left) await load(null);
  }

  async function pause() {
    const reason = await ui.confirm({
      text:
        `Pause ${poolId}? Reserves, releases, confirms and changes are refused (503 paused) until it is ` +
        "resumed; reads and hold expiry go on.",
      input: { label: "Reason", required: true },
      ok: "Pause",
    });
    if (reason !== null) await act("POST", "v1/admin/pools/{}/pause", { reason });
  }

  async function resume() {
    const yes = await ui.confirm({ text: `Resume ${poolId}? It takes writes again.`, ok: "Resume" });
    if (yes !== null) await act("POST", "v1/admin/pools/{}/resume");
  }

  async function changeCapacity() {
    const pool = history.pool;
    const value = await ui.confirm({
      text:
        `Change the capacity of ${poolId} (now ${pool.capacity}, ${pool.reserved} reserved)? Below what is ` +
        "reserved, it offers nothing until releases bring it back under.",
      input: { label: "New capacity", type: "number", min: 0, value: pool.capacity, required: true },
      ok: "Change capacity",
    });
    if (value === null) return;
    const settings = { capacity: Number(value), zone: pool.zone, slot_start: pool.slot_start, slot_end: pool.slot_end };
    await act("PUT", "v1/pools/{}", settings);
  }

  async function retire() {
    const yes = await ui.confirm({
      text:
        `Retire ${poolId}? It takes no new reservations from now on, for good (releases and reads go on), ` +
        "and it leaves availability.",
      ok: "Retire",
    });
    if (yes !== null) await act("DELETE", "v1/pools/{}");
  }

  load(null);
  return () => {
    left = true;
    stopStream();
    clearTimeout(sliderWait);
    clearTimeout(refreshWait);
  };
}
