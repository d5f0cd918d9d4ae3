// The demo chat of `ssehub serve --demo`, built on ssehub.js and nothing else.
//
// A conversation is a session: `?session=<id>` in the URL, and a topic `demo/sessions/<id>` that records one
// `turn` event {run, message} per question. Every tab on that URL follows the topic, so a reload or a second
// tab joins the same runs. Each answer is the run's own event stream:
//   - the tab that asks reads it from its POST (stream());
//   - a tab that reloads restores what it showed (sessionStorage) and resumes after the last id it read;
//   - any other tab reads the run from its first event.
//
// With access control on, the page asks POST /demo/token for a short-lived token that may start the demo
// agent and use the topics under `demo/{browser}/` (this browser's own, named by an HttpOnly cookie), and
// asks again whenever the hub says it has expired. Runs are read and stopped with the run's own token
// (X-Run-Token) while the page has it, else with the page's: this browser started them, so they are its own.
// Without access control the token is null and the topics are under `demo/`.
import { cancel, stream, subscribe } from "/_ssehub/ssehub.js";

const $ = (id) => document.getElementById(id);
const turnsEl = $("turns"), chatEl = $("chat"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop");
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function sessionId() {
  const params = new URLSearchParams(location.search);
  const given = params.get("session");
  if (given && /^[A-Za-z0-9_-]{1,64}$/.test(given)) return given;
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  params.set("session", id);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  return id;
}
const session = sessionId();

// -- the page's token --------------------------------------------------------------------------------------

let access = null; // {token, expires_in, topics} from the hub, and when to ask again
let asking = null;
function askToken() {
  asking ??= (async () => {
    const response = await fetch("/demo/token", { method: "POST", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`the hub refused a token (${response.status})`);
    const got = await response.json();
    // Ask again a little before the hub would refuse it.
    const life = Number(got.expires_in) || 0;
    access = { ...got, renewAt: Date.now() + 1000 * (life - Math.min(5, life / 4)) };
    return access;
  })().finally(() => { asking = null; });
  return asking;
}
// For ssehub.js: the token we have, or a fresh one when the hub refused that one (or it is about to expire).
async function pageToken(refused = null) {
  if (!access || access.token === refused || Date.now() >= access.renewAt) await askToken();
  return access.token;
}
const bearer = async () => (access.token ? { Authorization: `Bearer ${await pageToken()}` } : {});

// The page waits for its first token (null without access control) before it talks to the hub.
const ready = askToken().catch((err) => {
  const banner = $("banner");
  banner.hidden = false;
  banner.textContent = `Cannot reach the hub: ${err.message}. Reload to try again.`;
  throw err;
});
let sessionEvents = null, token;
const eventsUrl = (runId) => `/runs/${encodeURIComponent(runId)}/events`;
const snapshotKey = (runId) => `ssehub-demo:turn:${runId}`;

// -- the model: one turn per question; rendering follows it once per animation frame -------------------

const turns = new Map(); // run id -> turn
let pending = null; // the turn this tab asked for, before the hub has named its run

function newTurn(message) {
  const turn = { runId: null, message, text: "", tools: [], progress: null, step: null, status: "running", note: "" };
  turn.el = renderTurn(turn);
  return turn;
}

function save(turn) {
  if (!turn.runId) return;
  const { el, runToken, ...data } = turn;
  try {
    sessionStorage.setItem(snapshotKey(turn.runId), JSON.stringify(data));
  } catch { /* storage full: a reload replays the run instead */ }
}

function restore(runId) {
  try {
    return JSON.parse(sessionStorage.getItem(snapshotKey(runId)) ?? "null");
  } catch {
    return null;
  }
}

// Handlers of a run's events. They change the model and save it in the same task, before ssehub.js records
// the event's id: what a reload restores and where it resumes always match.
function handlersFor(turn, onState) {
  const change = (fn) => (data) => {
    fn(data ?? {});
    save(turn);
    schedule(turn);
  };
  const finish = (status, note) => {
    turn.status = status;
    turn.note = note;
    turn.progress = null;
    if (activeTurn() === null) setBusy(false);
  };
  return {
    text_delta: change((d) => { turn.text += d.content ?? ""; }),
    progress: change((d) => { turn.progress = { percent: Number(d.percent) || 0, message: d.message ?? "" }; }),
    step_start: change((d) => { turn.step = d.step ?? null; }),
    step_end: change(() => { turn.step = null; }),
    tool_start: change((d) => {
      turn.tools.push({ id: d.call_id, tool: d.tool, args: d.args, result: undefined, done: false });
    }),
    tool_result: change((d) => {
      const call = turn.tools.find((t) => t.id === d.call_id && !t.done);
      if (call) Object.assign(call, { result: d.result, done: true });
      else turn.tools.push({ id: d.call_id, tool: d.tool, args: undefined, result: d.result, done: true });
    }),
    done: change(() => finish("completed", "")),
    error: change((d) => finish("failed", d.message ?? "The agent failed.")),
    cancelled: change(() => finish("cancelled", "Stopped. The run was cancelled.")),
    reset: change(() => { turn.note = "Part of this answer has expired from the log."; }),
    onState,
  };
}

// -- rendering -----------------------------------------------------------------------------------------------

const dirty = new Set();
let frame = 0;
function schedule(turn) {
  dirty.add(turn);
  if (frame) return;
  frame = requestAnimationFrame(flush);
  // Hidden tabs get no animation frames; a timer keeps a background tab current too.
  setTimeout(flush, 250);
}
function flush() {
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  const atBottom = chatEl.scrollHeight - chatEl.scrollTop - chatEl.clientHeight < 80;
  for (const turn of dirty) paint(turn);
  dirty.clear();
  if (atBottom) chatEl.scrollTop = chatEl.scrollHeight;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderTurn(turn) {
  $("welcome").hidden = true;
  const root = el("article", "turn");
  root.append(el("div", "user-msg", turn.message));
  const assistant = el("div", "assistant");
  const body = el("div", "assistant-body");
  const progress = el("div", "progress");
  progress.innerHTML =
    '<div class="progress-label"><span class="progress-message"></span><span class="progress-percent"></span></div>' +
    '<div class="progress-track" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="progress-fill"></div></div>';
  const typing = el("div", "typing");
  typing.setAttribute("aria-label", "The agent is typing");
  typing.innerHTML = "<span></span><span></span><span></span>";
  const regenerate = el("button", "regenerate ghost", "Regenerate");
  regenerate.type = "button";
  regenerate.title = "Ask the same question again";
  regenerate.addEventListener("click", () => {
    if (!activeTurn()) ask(turn.message);
  });
  body.append(progress, el("div", "tools"), el("div", "answer"), typing, el("div", "status"), regenerate);
  assistant.append(el("div", "avatar"), body);
  root.append(assistant);
  turnsEl.append(root);
  return root;
}

function paint(turn) {
  const root = turn.el;
  const q = (cls) => root.querySelector(cls);
  if (turn.runId) root.dataset.runId = turn.runId;
  root.dataset.status = turn.status;
  q(".answer").textContent = turn.text;

  const running = turn.status === "running";
  const progress = q(".progress");
  progress.hidden = !(running && (turn.progress || turn.step));
  if (!progress.hidden) {
    const pct = Math.max(0, Math.min(100, turn.progress?.percent ?? 0));
    q(".progress-message").textContent = turn.progress?.message || turn.step || "Working";
    q(".progress-percent").textContent = turn.progress ? `${Math.round(pct)}%` : "";
    q(".progress-fill").style.width = `${pct}%`;
    q(".progress-track").setAttribute("aria-valuenow", String(Math.round(pct)));
  }

  const tools = q(".tools");
  tools.replaceChildren(
    ...turn.tools.map((call) => {
      const row = el("div", "tool");
      row.dataset.state = call.done ? "done" : "running";
      row.append(call.done ? el("span", "check", "✓") : el("span", "spinner"), el("span", "tool-name", call.tool ?? "tool"));
      const detail = call.done ? call.result : call.args;
      if (detail !== undefined) row.append(el("code", "", (call.done ? "→ " : "") + JSON.stringify(detail)));
      return row;
    }),
  );

  q(".typing").hidden = !running;
  // Shown on the last turn only, once it has ended (demo.css hides it on earlier turns and while busy).
  q(".regenerate").hidden = running;
  const status = q(".status");
  status.dataset.status = turn.status;
  status.textContent = turn.note;
}

// -- the connection banner -------------------------------------------------------------------------------------

const connections = new Map();
function connection(name) {
  return (state) => {
    if (state === "closed") connections.delete(name);
    else connections.set(name, state);
    const states = [...connections.values()];
    const banner = $("banner");
    const show = states.includes("reconnecting") ? "reconnecting" : null;
    banner.hidden = !show;
    if (show) {
      banner.dataset.state = show;
      banner.textContent = "Connection lost. Reconnecting… the answer will continue where it left off.";
    }
  };
}

// -- running turns ------------------------------------------------------------------------------------------------

function activeTurn() {
  if (pending) return pending;
  for (const turn of turns.values()) if (turn.status === "running") return turn;
  return null;
}

function setBusy(busy) {
  sendBtn.hidden = busy;
  stopBtn.hidden = !busy;
  document.body.toggleAttribute("data-busy", busy);
}

// What a failed request says to a person: "Failed to fetch" says nothing.
function sendError(err) {
  if (err?.code === "unreachable") return "Could not send: the server cannot be reached. Press Regenerate to try again.";
  if (err?.status === 429) return `The server is busy: ${err.message} Press Regenerate to try again.`;
  return `Could not send: ${err?.message ?? "the request failed"}.`.replace(/\.\.$/, ".");
}

function follow(turn, after) {
  setBusy(true);
  const name = `run:${turn.runId}`;
  const onState = connection(name);
  subscribe(eventsUrl(turn.runId), handlersFor(turn, (state) => {
    onState(state);
    // The run ended while we were away (204): ask the hub how it ended.
    if (state === "closed" && turn.status === "running") settle(turn);
  }), after === undefined ? { token } : { after, token });
}

async function settle(turn) {
  try {
    const response = await fetch(`/runs/${encodeURIComponent(turn.runId)}`, {
      headers: { Accept: "application/json", ...(await bearer()) },
    });
    if (!response.ok) return;
    const run = await response.json();
    if (TERMINAL.has(run.status)) {
      turn.status = run.status;
      if (run.status === "cancelled") turn.note = "Stopped. The run was cancelled.";
      if (run.status === "failed") turn.note = run.error?.message ?? String(run.error ?? "The agent failed.");
      save(turn);
      schedule(turn);
      if (activeTurn() === null) setBusy(false);
    }
  } catch { /* offline: the banner says so */ }
}

function join(runId, message) {
  if (turns.has(runId)) return;
  const saved = restore(runId);
  const turn = newTurn(message);
  turn.runId = runId;
  turns.set(runId, turn);
  if (saved) {
    Object.assign(turn, saved, { el: turn.el });
    schedule(turn);
    if (turn.status === "running") follow(turn); // ssehub.js resumes after the id it kept for this run
  } else {
    schedule(turn);
    follow(turn, 0); // from the run's first event
  }
}

async function ask(message) {
  const turn = newTurn(message);
  pending = turn;
  setBusy(true);
  schedule(turn);
  await ready;
  const run = stream("/agents/chat", { message }, {
    ...handlersFor(turn, connection("ask")),
    onStart: async ({ runId, runToken }) => {
      turn.runId = runId;
      turn.runToken = runToken; // kept in memory only: a reload reads the run with the page's token
      turns.set(runId, turn);
      pending = null;
      save(turn);
      schedule(turn);
      // Tell the other tabs of this session (and this tab after a reload) about the new run.
      fetch(sessionEvents, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(await bearer()) },
        body: JSON.stringify({ event: "turn", data: { run: runId, message } }),
      });
    },
  }, { token });
  try {
    const ended = await run.done;
    if (!ended && turn.runId) await settle(turn);
  } catch (err) {
    if (pending === turn) pending = null;
    turn.status = "failed";
    turn.note = turn.runId ? err?.message ?? "The answer failed." : sendError(err);
    schedule(turn);
  }
  if (activeTurn() === null) setBusy(false);
}

// The run's own token while the hub takes it, then the page's.
const stopToken = (turn) => (refused) =>
  turn.runToken && !refused ? turn.runToken : pageToken(refused === turn.runToken ? null : refused);

async function stop() {
  const turn = activeTurn();
  if (!turn || !turn.runId) return;
  stopBtn.disabled = true;
  try {
    await cancel(turn.runId, { token: access.token ? stopToken(turn) : undefined });
  } catch (err) {
    turn.note = `Could not stop: ${err.message}`;
    schedule(turn);
  } finally {
    stopBtn.disabled = false;
  }
}

// -- wiring ----------------------------------------------------------------------------------------------------------

// The session topic is the page's own connection: the banner shows when it drops, even between answers.
ready.then(() => {
  sessionEvents = `/topics/${access.topics}sessions/${session}/events`;
  token = access.token ? pageToken : undefined;
  subscribe(
    sessionEvents,
    { turn: (d) => d && d.run && join(String(d.run), String(d.message ?? "")), onState: connection("session") },
    { after: 0, resume: false, terminal: [], token },
  );
}).catch(() => {}); // the banner says it

function send() {
  const message = input.value.trim();
  if (!message || activeTurn()) return;
  input.value = "";
  autosize();
  ask(message);
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
input.addEventListener("input", autosize);
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") stop();
});
stopBtn.addEventListener("click", stop);
$("new-chat").addEventListener("click", () => {
  location.href = location.pathname;
});
for (const button of document.querySelectorAll(".suggestion")) {
  button.addEventListener("click", () => {
    input.value = button.textContent;
    send();
  });
}
input.focus();
