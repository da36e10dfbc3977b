// Building the page: elements with text nodes only (never HTML from data), and times as UTC.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

// "2026-12-01 08:00" (minutes) or "2026-12-01 08:00:05.123" (milliseconds), in UTC as the API gives them.
export function utc(iso, precise = false) {
  if (!iso) return "";
  const text = new Date(iso).toISOString().replace("T", " ");
  return precise ? text.slice(0, 23) : text.slice(0, 16);
}

// A table of rows, or a line saying there are none.
export function table(headings, rows, empty) {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    { class: "list" },
    h("thead", {}, h("tr", {}, headings.map((heading) => h("th", {}, heading)))),
    h("tbody", {}, rows),
  );
}
