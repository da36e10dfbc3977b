// The service's HTTP API as the console uses it: JSON calls and the availability stream, with the admin key
// when one is set, and every error turned into words.

const KEY = "capacity-service.admin-key";
// The app's root: the console is served at <root>/console/.
const ROOT = new URL("..", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// The admin key lives in this tab's sessionStorage only: never in a URL, gone when the tab closes.
export const adminKey = () => sessionStorage.getItem(KEY);
export const setAdminKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetAdminKey = () => sessionStorage.removeItem(KEY);

function headers(extra = {}) {
  const key = adminKey();
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

export async function call(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, ROOT), init);
  } catch {
    throw new ApiError(0, "unreachable", "the service does not answer");
  }
  return answerOf(response);
}

async function answerOf(response) {
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (response.ok) return parsed;
  const error = parsed?.error ?? {};
  const details = { ...error, retryAfter: response.headers.get("retry-after") };
  throw new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? "", details);
}

export const path = (template, ...ids) =>
  template.replace(/\{\}/g, () => encodeURIComponent(ids.shift()));

// What went wrong, in words an operator can act on.
export function inWords(error) {
  if (!(error instanceof ApiError)) return `Something went wrong in the console: ${error}`;
  const said = error.message ? ` (${error.message})` : "";
  switch (error.code) {
    case "unreachable":
      return "The service does not answer. Is it running? If you made a change, reload to see whether it was made.";
    case "overloaded": {
      const wait = error.details.retryAfter ? ` in ${error.details.retryAfter} s` : " in a moment";
      return `The service is overloaded and did nothing. Try again${wait}.`;
    }
    case "paused":
      return `Refused, nothing was done: ${error.message}. Resume the pool first.`;
    case "pool_retired":
      return "Refused, nothing was done: the pool is retired, for good (no new reservations, no changes).";
    case "pool_not_found":
      return `There is no such pool${said}.`;
    case "unauthorized":
      return "This service needs an admin key.";
    case "forbidden":
      return `The service refused: ${error.message}`;
    case "unavailable":
      return `The service could not answer in time, and nothing was changed. Try again${said}.`;
    case "outcome_unknown":
      return `The service cannot tell whether that took effect. Reload the page to see${said}.`;
    case "invalid_request":
      return `The service refused the input: ${error.message}`;
    default:
      return `The service answered ${error.status} ${error.code}${said}.`;
  }
}

// The availability stream of some zones (Server-Sent Events), read with fetch so that it carries the key
// (EventSource cannot send one). Calls onPool(pool) for each event and onState("live" | "connecting" |
// error) as the connection goes; reconnects after a second with the last event id. Returns a stop function.
export function watchZones(zones, onPool, onState) {
  const stopper = new AbortController();
  let lastEventId = null;

  async function readOnce() {
    const query = new URLSearchParams(zones.map((zone) => ["zone", zone]));
    const extra = lastEventId ? { "last-event-id": lastEventId } : {};
    const response = await fetch(new URL(`v1/availability/stream?${query}`, ROOT), {
      headers: headers(extra),
      signal: stopper.signal,
      cache: "no-store",
    });
    if (!response.ok) await answerOf(response); // throws its error
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    let data = null;
    for (const line of block.split("\n")) {
      if (line.startsWith("id: ")) lastEventId = line.slice(4);
      else if (line.startsWith("data: ")) data = line.slice(6);
    }
    if (data !== null) onPool(JSON.parse(data));
  }

  (async () => {
    while (!stopper.signal.aborted) {
      onState("connecting");
      try {
        await readOnce();
      } catch (error) {
        if (stopper.signal.aborted) return;
        onState(error instanceof ApiError ? error : new ApiError(0, "unreachable", ""));
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  return () => stopper.abort();
}
