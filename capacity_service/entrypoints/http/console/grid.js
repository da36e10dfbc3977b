// The grid: zones (rows) x time slots (columns), each cell the remaining capacity of the zone's pools of that
// slot, live from the availability stream. Paged both ways (a page of zones, a window of slots), so the
// page holds a few hundred cells whatever the number of pools.
import { call, watchZones } from "./api.js";
import { h, utc } from "./dom.js";

const ZONES_PER_PAGE = 20;
const SLOTS_PER_PAGE = 12;
const POOLS_PER_CELL = 3;
const NO_SLOT = "";

export function showGrid(main, ui) {
  const pools = new Map(); // pool_id -> its latest event of the stream
  const pageStarts = [null]; // the `after` of each page visited: the way back
  let zones = [];
  let nextAfter = null;
  let slotOffset = null; // null: at the first slot not over yet
  let stopStream = () => {};
  let renderSoon = null;
  let left = false; // the operator went to another page: answers that come late change nothing here

  async function loadZones() {
    const after = pageStarts[pageStarts.length - 1];
    const query = new URLSearchParams({ limit: ZONES_PER_PAGE, ...(after === null ? {} : { after }) });
    let page;
    try {
      page = await call("GET", `v1/admin/zones?${query}`);
    } catch (error) {
      if (!left) ui.fail(error, loadZones, main);
      return;
    }
    if (left) return;
    zones = page.zones.map((summary) => summary.zone);
    nextAfter = page.next_after;
    stopStream();
    pools.clear();
    slotOffset = null;
    stopStream = zones.length ? watchZones(zones, onPool, ui.setLive) : () => {};
    render();
  }

  function onPool(pool) {
    if (pool.state === "retired") pools.delete(pool.pool_id);
    else pools.set(pool.pool_id, pool);
    renderSoon ??= setTimeout(render, 30); // a burst of events, one render
  }

  function columns() {
    const ends = new Map(); // slot start -> the latest end of its pools ("" for none)
    for (const pool of pools.values()) {
      const start = pool.slot_start ?? NO_SLOT;
      const end = pool.slot_end ?? "";
      if (!ends.has(start) || Date.parse(end) > Date.parse(ends.get(start))) ends.set(start, end);
    }
    const starts = [...ends.keys()].sort(bySlot);
    const now = Date.now();
    const notOver = (start) => start === NO_SLOT || Date.parse(ends.get(start) || start) > now;
    return { starts, current: Math.max(0, starts.findIndex(notOver)) };
  }

  function render() {
    renderSoon = null;
    const { starts, current } = columns();
    const first = Math.min(slotOffset ?? current, Math.max(0, starts.length - SLOTS_PER_PAGE));
    const shown = starts.slice(first, first + SLOTS_PER_PAGE);
    const moveSlots = (offset) => () => {
      slotOffset = Math.max(0, offset);
      render();
    };
    const page = pageStarts.length;
    const earlier = first - SLOTS_PER_PAGE;
    const later = first + SLOTS_PER_PAGE;
    const range = shown.length ? `Slots ${first + 1}–${first + shown.length} of ${starts.length}` : "";
    const toolbar = h(
      "div",
      { class: "toolbar" },
      h("button", { id: "zones-back", disabled: page === 1, onclick: () => turnPage(-1) }, "◀ Previous zones"),
      h("button", { id: "zones-next", disabled: nextAfter === null, onclick: () => turnPage(1) }, "Next zones ▶"),
      h("span", { class: "muted" }, `Page ${page} of zones`),
      h("span", { class: "spacer" }),
      h("button", { id: "slots-back", disabled: first === 0, onclick: moveSlots(earlier) }, "◀ Earlier"),
      h("span", { class: "muted" }, range),
      h("button", { id: "slots-next", disabled: later >= starts.length, onclick: moveSlots(later) }, "Later ▶"),
    );
    const content = zones.length
      ? gridTable(shown)
      : h("p", { class: "muted" }, "No pools on sale yet: create one with PUT /v1/pools/{pool_id}.");
    const title = h("h2", {}, "Remaining capacity by zone and slot (UTC)");
    main.replaceChildren(h("section", { class: "panel" }, title, toolbar, content, legend()));
  }

  function gridTable(starts) {
    const byCell = new Map(); // "zone\nslot start" -> its pools
    const byZone = new Map(zones.map((zone) => [zone, { pools: 0, left: 0 }]));
    for (const pool of pools.values()) {
      const key = `${pool.zone}\n${pool.slot_start ?? NO_SLOT}`;
      if (!byCell.has(key)) byCell.set(key, []);
      byCell.get(key).push(pool);
      const sums = byZone.get(pool.zone);
      if (sums) {
        sums.pools += 1;
        sums.left += pool.remaining;
      }
    }
    const rows = zones.map((zone) => {
      const { pools: count, left } = byZone.get(zone);
      return h(
        "tr",
        { dataset: { zone } },
        h("td", { class: "zone" }, h("strong", {}, zone), h("div", { class: "muted" }, `${count} pools, ${left} left`)),
        starts.map((start) => h("td", {}, cell(byCell.get(`${zone}\n${start}`) ?? []))),
      );
    });
    const heads = starts.map((start) => h("th", {}, slotLabel(start)));
    return h(
      "table",
      { class: "grid", id: "grid" },
      h("thead", {}, h("tr", {}, h("th", { class: "zone" }, "zone"), heads)),
      h("tbody", {}, rows),
    );
  }

  function turnPage(step) {
    if (step > 0) pageStarts.push(nextAfter);
    else pageStarts.pop();
    loadZones();
  }

  loadZones();
  return () => {
    left = true;
    stopStream();
    clearTimeout(renderSoon);
  };
}

function cell(pools) {
  pools.sort((a, b) => (a.pool_id < b.pool_id ? -1 : 1));
  const chips = pools.slice(0, POOLS_PER_CELL).map((pool) =>
    h(
      "a",
      {
        class: "pool",
        href: `#/pool/${encodeURIComponent(pool.pool_id)}`,
        title: `${pool.pool_id}: ${pool.remaining} of ${pool.capacity} left${pool.paused ? " (paused)" : ""}`,
        dataset: { pool: pool.pool_id, level: level(pool) },
      },
      String(pool.remaining),
    ),
  );
  const more = pools.length - chips.length;
  return more > 0 ? [...chips, h("span", { class: "more" }, ` +${more} more`)] : chips;
}

// Slots in time order, pools without a slot last.
function bySlot(a, b) {
  if (a === b) return 0;
  if (a === NO_SLOT || b === NO_SLOT) return a === NO_SLOT ? 1 : -1;
  return Date.parse(a) - Date.parse(b);
}

function level(pool) {
  if (pool.paused) return "paused";
  if (pool.remaining === 0) return "none";
  return pool.remaining * 4 < pool.capacity ? "low" : "ok";
}

function slotLabel(start) {
  return start === NO_SLOT ? "no slot" : utc(start);
}

function legend() {
  const sample = (level, text) => h("span", {}, h("a", { class: "pool", dataset: { level } }, " "), ` ${text}`);
  return h(
    "div",
    { class: "legend" },
    sample("ok", "a quarter or more left"),
    sample("low", "less than a quarter left"),
    sample("none", "sold out"),
    sample("paused", "paused"),
    h("span", {}, "The number is the units left; click a pool for its page."),
  );
}
