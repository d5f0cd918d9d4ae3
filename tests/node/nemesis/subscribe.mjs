// Subscribers on the npm `eventsource` package, for the nemesis runs (tests/nemesis).
//
//   node subscribe.mjs OUT.jsonl < one JSON line per subscriber: {"name", "url", "events": [...]}
//
// Each subscriber is a plain EventSource: it reconnects by itself with Last-Event-ID and stops on
// 204. Everything it sees goes to OUT as JSON lines {t, name, kind: open|error|event|end, ...}.
// An EventSource gives up for good on any other non-200 answer (a 503 while the store is away);
// then, as an application would, a new one starts from the last id it saw. The process exits
// once its input is closed and every subscriber has ended.
import { EventSource } from "eventsource";
import fs from "node:fs";
import readline from "node:readline";

const out = fs.openSync(process.argv[2], "a");
const write = (record) => fs.writeSync(out, JSON.stringify({ t: Date.now() / 1000, ...record }) + "\n");

let running = 0;
let inputClosed = false;
const maybeExit = () => {
  if (inputClosed && running === 0) {
    fs.closeSync(out);
    process.exit(0);
  }
};

function resumeUrl(url, lastId) {
  if (lastId === null) return url;
  const next = new URL(url);
  next.searchParams.set("after", lastId);
  return next.href;
}

function subscribe({ name, url, events }) {
  running += 1;
  let lastId = null;
  const connect = (target) => {
    const source = new EventSource(target);
    source.onopen = () => write({ name, kind: "open" });
    source.onerror = (err) => {
      write({ name, kind: "error", code: err.code ?? null, message: err.message ?? "" });
      if (source.readyState !== source.CLOSED) return; // reconnecting by itself
      if (err.code === 204) {
        write({ name, kind: "end" });
        running -= 1;
        maybeExit();
        return;
      }
      setTimeout(() => connect(resumeUrl(url, lastId)), 500);
    };
    for (const type of events) {
      source.addEventListener(type, (ev) => {
        if (!(ev instanceof MessageEvent)) return; // the connection's own "error"
        lastId = ev.lastEventId;
        write({ name, kind: "event", id: ev.lastEventId, event: type, data: ev.data });
      });
    }
  };
  connect(url);
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (line.trim()) subscribe(JSON.parse(line));
});
input.on("close", () => {
  inputClosed = true;
  maybeExit();
});
