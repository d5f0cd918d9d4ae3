// ssehub.js: the browser client of ssehub. One dependency-free ES module; copy it anywhere or import it from
// the hub at /_ssehub/ssehub.js.
//
//   import { subscribe, stream, cancel } from "/_ssehub/ssehub.js";
//
//   const sub = subscribe("/topics/build-42/events", {
//     log: (data) => console.log(data.line),          // a handler per event name; data is parsed JSON
//     onState: (state) => console.log(state),         // connecting | open | reconnecting | closed
//   });
//   sub.close();
//
//   const run = stream("/agents/chat", { message: "hi" }, { text_delta: (d) => out.append(d.content) });
//   run.abort();              // stops reading; the run goes on (use cancel(runId) to stop the agent)
//   await run.done;           // {event, data} of the terminal event, or null when the stream just ended
//
// Every event carries an integer id. The last id read is kept per URL in sessionStorage, so a page that
// reloads resumes exactly where it was: nothing repeated, nothing missing.
//
// A hub with access control wants a token: `{ token: "..." }`, or `{ token: async (refused) => fresh() }`,
// called again (with the token refused) when the hub answers 401 or ends a stream with `auth_expired` (the
// token expired mid-stream); the stream then resumes from its last id. subscribe() sends it as `?token=`
// (EventSource cannot set headers), stream() and cancel() as `Authorization: Bearer`. stream() hands the
// run's own token (`X-Run-Token`: read and cancel that run) to onStart, and resumes with it.

export const TERMINAL_EVENTS = Object.freeze(["done", "error", "cancelled"]);
export const AGENT_EVENTS = Object.freeze([
  "message", "text_delta", "progress", "tool_start", "tool_result", "step_start", "step_end", "reset",
  ...TERMINAL_EVENTS,
]);

/** An HTTP error answer of the hub: `status`, and `code` and `message` from its JSON body. */
export class SSEHubError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "SSEHubError";
    this.status = status;
    this.code = code;
  }
}

/** The error of a request that never got an answer (the server is down, or the network is). */
export function unreachable(cause) {
  const error = new SSEHubError(0, "unreachable", "Cannot reach the server. Check the connection and try again.");
  error.cause = cause;
  return error;
}

async function errorOf(response) {
  let code = "http_error", message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON: keep the status line */ }
  return new SSEHubError(response.status, code, message);
}

/**
 * A token source from a string, a function returning a (promise of a) token, or nothing. `get(stale)` gives
 * the current token, or a fresh one when `stale` is the current one (the hub refused it, or it expired).
 * The function is called with the token the hub refused (null the first time), so it can tell "the token
 * you have" from "a fresh one, please".
 */
function tokenSource(token) {
  const refreshable = typeof token === "function";
  let current = typeof token === "string" && token ? token : null, pending = null;
  const stale = (refused) => refreshable && (current === null || current === refused);
  return {
    refreshable,
    /** The token at once when no fresh one is needed (null: none), else undefined: get() must ask. */
    ready(refused = null) {
      return stale(refused) ? undefined : current;
    },
    async get(refused = null) {
      if (stale(refused)) {
        const given = current;
        pending ??= Promise.resolve()
          .then(() => token(given))
          .finally(() => { pending = null; });
        const fresh = await pending;
        if (typeof fresh !== "string" || !fresh) throw new Error("the token function must return a non-empty string");
        current = fresh;
      }
      return current;
    },
  };
}

// The credentials of a run: its own token from X-Run-Token while the hub takes it, then the caller's.
function runSource(runToken, fallback) {
  let own = runToken || null;
  return {
    refreshable: true,
    async get(stale = null) {
      if (own !== null && stale !== own) return own;
      if (own !== null) {
        own = null;
        return fallback.get(null);
      }
      return fallback.get(stale);
    },
  };
}

const bearer = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

// fetch() with the source's token; on a 401, once more with a fresh one (nothing was done: safe to repeat).
async function fetchWith(source, url, init) {
  let token = await source.get();
  let response = await fetch(url, { ...init, headers: { ...init.headers, ...bearer(token) } });
  if (response.status === 401 && source.refreshable) {
    token = await source.get(token);
    response = await fetch(url, { ...init, headers: { ...init.headers, ...bearer(token) } });
  }
  return response;
}

function absolute(url) {
  return new URL(url, globalThis.location ? globalThis.location.href : "http://localhost/");
}

/** The sessionStorage key under which the last event id read from `url` is kept. */
export function storageKey(url) {
  return "ssehub:last-id:" + absolute(url).pathname;
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled (privacy settings, sandboxed frames): resume within the page only
  }
}

function parseData(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** An incremental parser of the text/event-stream format (the WHATWG rules): push text, get events. */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.id = null;
    this.lastEventId = "";
    this.retry = null;
    this.pendingCR = false;
  }

  /** Feeds decoded text; returns the events it completed as {id, event, data} (data as text). */
  push(text) {
    const out = [];
    if (text === "") return out;
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1); // a CRLF split across two chunks
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start), lf = this.buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      const line = this.buffer.slice(start, end);
      start = end + 1;
      if (this.buffer[end] === "\r") {
        if (start === this.buffer.length) this.pendingCR = true;
        else if (this.buffer[start] === "\n") start += 1;
      }
      this.line(line, out);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  line(line, out) {
    if (line === "") {
      if (this.id !== null) this.lastEventId = this.id;
      this.id = null;
      if (this.data.length) out.push({ id: this.lastEventId, event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

// Calls the handler of one event, then records its id: a reload between the two cannot happen, since both
// run in one task, so what the page shows and the id it resumes from always agree.
function deliver(handlers, ev, remember) {
  const event = { id: ev.id === "" ? null : Number(ev.id), event: ev.event, data: parseData(ev.data), raw: ev.data };
  try {
    handlers.onEvent?.(event);
    const handler = handlers[event.event];
    if (typeof handler === "function") handler(event.data, event);
  } finally {
    if (event.id !== null && Number.isFinite(event.id)) remember(event.id);
  }
  return event;
}

function memory(url, options) {
  const storage = options.resume === false ? null : options.storage ?? defaultStorage();
  const key = options.key ?? storageKey(url);
  let last = options.after ?? null;
  if (last === null && storage) {
    const saved = storage.getItem(key);
    if (saved !== null && /^\d+$/.test(saved)) last = Number(saved);
  }
  return {
    get last() {
      return last;
    },
    remember(id) {
      last = id;
      if (storage) {
        try {
          storage.setItem(key, String(id));
        } catch { /* storage full: resume within the page only */ }
      }
    },
  };
}

/**
 * Subscribes to an SSE URL with the browser's EventSource; returns {close(), lastEventId, state}.
 *
 * handlers: a function per event name, called as (data, event) with data parsed from JSON; `onEvent(event)`
 * for every event; `onState(state)` with connecting, open, reconnecting or closed.
 * options: `after` (start after this id; otherwise the id kept in sessionStorage, otherwise live events only),
 * `resume: false` (keep no id in sessionStorage), `storage`, `key`, `terminal` (event names that end it),
 * `events` (names to listen to besides the handlers' and the agent vocabulary), `token` (a string, or a
 * function returning a fresh one), `withCredentials` (send cookies to another origin).
 */
export function subscribe(url, handlers = {}, options = {}) {
  const cursor = memory(url, options);
  const terminal = new Set(options.terminal ?? TERMINAL_EVENTS);
  const names = new Set([...AGENT_EVENTS, ...(options.events ?? []), ...Object.keys(handlers)]);
  const tokens = tokenSource(options.token);
  let state = null, source = null, probing = null, token = null, refreshed = false;

  const setState = (next) => {
    if (next === state) return;
    state = next;
    handlers.onState?.(next);
  };
  const stopProbing = () => {
    probing?.abort();
    probing = null;
  };
  const close = () => {
    stopProbing();
    if (source) source.close();
    setState("closed");
  };
  const onMessage = (message) => {
    if (state === "closed") return;
    const ev = deliver(handlers, { id: message.lastEventId, event: message.type, data: message.data }, cursor.remember);
    if (terminal.has(ev.event)) close();
  };
  // EventSource retries by itself, but only every `retry:` milliseconds: while it does, look for the hub
  // and, as soon as it answers, connect again at once from the last id.
  const probe = () => {
    if (probing) return;
    probing = new AbortController();
    const signal = probing.signal;
    waitForHub(Infinity, url, signal, options, true).then(() => {
      if (signal.aborted || state !== "reconnecting") return;
      probing = null;
      source.close();
      connect();
    });
  };
  // Opens an EventSource from the cursor; with `stale`, after getting a token fresher than that one (at once,
  // in this task, when there is no token function to ask).
  const connect = (stale = null) => {
    const now = tokens.ready(stale);
    if (now !== undefined) return open(now);
    tokens.get(stale).then(open, () => {
      // No fresh token now (offline?): try again in a while, as EventSource would.
      setState("reconnecting");
      setTimeout(() => state !== "closed" && connect(stale), 2000);
    });
  };
  const open = (given) => {
    token = given;
    if (state === "closed") return;
    const target = absolute(url);
    if (cursor.last !== null) target.searchParams.set("after", String(cursor.last));
    if (token) target.searchParams.set("token", token);
    const es = (source = new EventSource(target.href, { withCredentials: options.withCredentials ?? false }));
    es.addEventListener("open", () => {
      stopProbing();
      refreshed = false;
      setState("open");
    });
    es.addEventListener("error", (e) => {
      if (e instanceof MessageEvent || es !== source) return; // an `event: error` from the server, or a replaced source
      if (es.readyState === EventSource.CLOSED) {
        // The hub answered 204 (the topic has ended and everything was read) or an HTTP error, such as a 401
        // for a token that expired while EventSource reconnected by itself. Once, try a fresh token.
        stopProbing();
        if (tokens.refreshable && !refreshed && state !== "closed") {
          refreshed = true;
          setState("reconnecting");
          connect(token);
          return;
        }
        setState("closed");
        return;
      }
      setState("reconnecting");
      probe();
    });
    // The token expired mid-stream: the hub ends the stream now; go on from the cursor with a fresh one.
    es.addEventListener("auth_expired", () => {
      if (es !== source) return;
      es.close();
      if (state === "closed") return;
      setState("reconnecting");
      connect(token);
    });
    for (const name of names) {
      if (name === "onEvent" || name === "onState" || name === "open") continue;
      es.addEventListener(name, (e) => e instanceof MessageEvent && es === source && onMessage(e));
    }
  };

  setState("connecting");
  connect();
  return {
    close,
    get lastEventId() {
      return cursor.last;
    },
    get state() {
      return state;
    },
  };
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/** The hub's health URL for one of its URLs: whatever comes before /topics/ or /runs/ is where it is mounted. */
export function healthUrl(url) {
  const target = absolute(url);
  target.pathname = target.pathname.replace(/\/(topics|runs)\/.*$/, "") + "/healthz";
  target.search = "";
  return target.href;
}

// Waits out a reconnection delay. With `probe` (the hub could not be reached), it ends as soon as the hub
// answers again: a cheap health check every second, and at once when the browser is back online, so a
// restarted server gets its clients back at once rather than after the backoff. Attempts that reached the
// hub and failed (a 503) wait out the whole backoff.
async function waitForHub(ms, url, signal, options, probe) {
  if (!probe) return sleep(ms, signal);
  const until = Date.now() + ms;
  let online = null;
  const back = new Promise((resolve) => {
    online = resolve;
    globalThis.addEventListener?.("online", resolve, { once: true });
  });
  try {
    while (!signal.aborted && Date.now() < until) {
      const step = Math.min(1000, until - Date.now());
      if (await Promise.race([sleep(step, signal).then(() => false), back.then(() => true)])) return;
      try {
        const probe = await fetch(healthUrl(url), { signal, credentials: options.credentials ?? "same-origin" });
        if (probe.ok) return;
      } catch { /* still away */ }
    }
  } finally {
    globalThis.removeEventListener?.("online", online);
  }
}

/**
 * POSTs `body` (JSON unless a string) with Accept: text/event-stream and reads the answer as it streams.
 * If the connection drops before a terminal event, it resumes from the last id through the run's events URL
 * (`options.eventsUrl`, or the answer's Location header + "/events").
 *
 * handlers: as for subscribe(), plus `onStart({runId, eventsUrl, runToken, response})` once the hub has
 * answered; `runToken` (X-Run-Token) may read and cancel that run: pass it to cancel(). options.token (a
 * string, or a function returning a fresh one) authorises the POST, and the resumes once the run's own
 * token is refused.
 * Returns {abort(), done}: `done` resolves with the terminal event (or null if the stream ended without one)
 * and rejects with an SSEHubError when the hub refuses the request.
 */
export function stream(url, body, handlers = {}, options = {}) {
  const controller = new AbortController();
  const signal = controller.signal;
  const terminal = new Set(options.terminal ?? TERMINAL_EVENTS);
  let state = null;
  const setState = (next) => {
    if (next === state) return;
    state = next;
    handlers.onState?.(next);
  };

  const EXPIRED = {};
  const tokens = tokenSource(options.token);

  // Reads one response to its end; returns the terminal event if one came, EXPIRED if the token ran out.
  async function read(response, cursor, retry) {
    const parser = new SSEParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return null;
        for (const raw of parser.push(value)) {
          if (raw.event === "auth_expired") return EXPIRED;
          const ev = deliver(handlers, raw, cursor.remember);
          if (terminal.has(ev.event)) return ev;
        }
        if (parser.retry !== null) retry.ms = parser.retry;
      }
    } catch (err) {
      if (signal.aborted) throw err;
      return null; // the connection dropped: resume
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function run() {
    setState("connecting");
    const headers = { Accept: "text/event-stream", ...(options.headers ?? {}) };
    if (typeof body !== "string") headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetchWith(tokens, url, {
        method: "POST",
        headers,
        body: typeof body === "string" ? body : JSON.stringify(body),
        signal,
        credentials: options.credentials ?? "same-origin",
      });
    } catch (err) {
      throw signal.aborted ? err : unreachable(err);
    }
    if (!response.ok) throw await errorOf(response);
    const location = response.headers.get("Location");
    // Relative to the answer, not to the page: the hub may be on another origin (or there is no page, in Node).
    const base = response.url || absolute(url).href;
    const eventsUrl =
      options.eventsUrl ?? (location ? new URL(location.replace(/\/$/, "") + "/events", base).href : null);
    const runId = response.headers.get("X-Run-Id");
    const runToken = response.headers.get("X-Run-Token");
    const credentials = runSource(runToken, tokens);
    // The answer is the run's own stream, so its ids are kept under the events URL: a reload resumes there.
    const cursor = memory(eventsUrl ?? url, { ...options, after: 0 });
    handlers.onStart?.({ runId, eventsUrl, runToken, response });
    const retry = { ms: 1000 };
    let failures = 0, used = await tokens.get();
    for (;;) {
      setState("open");
      const ended = await read(response, cursor, retry);
      if (ended && ended !== EXPIRED) return ended;
      if (!eventsUrl) return null;
      // Reconnect until the hub answers; back off while it fails, but come back as soon as it is up again.
      // An expired token: straight back, with a fresh one.
      let away = true; // the connection dropped: the hub may be restarting
      let stale = ended === EXPIRED ? used : null, refusals = 0;
      for (;;) {
        setState("reconnecting");
        if (stale === null) {
          const delay = Math.min(retry.ms * 2 ** Math.min(failures, 4), 15000);
          await waitForHub(delay, eventsUrl, signal, options, away);
        }
        if (signal.aborted) throw new DOMException("aborted", "AbortError");
        try {
          used = await credentials.get(stale);
          response = await fetch(eventsUrl, {
            headers: {
              Accept: "text/event-stream",
              "Last-Event-ID": String(cursor.last ?? 0),
              ...(options.headers ?? {}),
              ...bearer(used),
            },
            signal,
            credentials: options.credentials ?? "same-origin",
          });
        } catch (err) {
          if (signal.aborted) throw err;
          away = true;
          failures += 1;
          stale = null;
          continue;
        }
        if (response.status === 204) return null; // the run has ended and everything was read
        if (response.ok) break;
        // Refused: the run's token has expired, say; then the caller's, then a fresh one of the caller's.
        if (response.status === 401 && refusals < 2) {
          refusals += 1;
          stale = used;
          continue;
        }
        if (response.status < 500) throw await errorOf(response);
        away = false;
        failures += 1;
        stale = null;
      }
      failures = 0;
    }
  }

  const done = run().finally(() => setState("closed"));
  done.catch(() => {}); // callers that only abort() need not handle the rejection
  return {
    abort: () => controller.abort(),
    done,
    get state() {
      return state;
    },
  };
}

/**
 * Asks the hub to cancel a run; resolves with {id, status}. `options.base` is the hub's URL prefix;
 * `options.token` the run's token (onStart's runToken) or any other that may cancel it, or a function.
 */
export async function cancel(runId, options = {}) {
  const base = (options.base ?? "").replace(/\/$/, "");
  let response;
  try {
    response = await fetchWith(tokenSource(options.token), `${base}/runs/${encodeURIComponent(runId)}/cancel`, {
      method: "POST",
      headers: { Accept: "application/json", ...(options.headers ?? {}) },
      credentials: options.credentials ?? "same-origin",
    });
  } catch (err) {
    throw unreachable(err);
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}
