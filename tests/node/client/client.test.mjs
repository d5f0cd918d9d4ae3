// The ssehub package, imported by its name as an app would, against the real server at $SSEHUB_URL
// (ssehub serve --demo). Run by tests/test_client_node.py: node --test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventSource } from "eventsource";
import { SSEHubError, cancel, healthUrl, stream, subscribe } from "ssehub";

globalThis.EventSource = EventSource; // Node 20 has fetch, not EventSource
const hub = process.env.SSEHUB_URL;

async function publish(topic, events) {
  const response = await fetch(`${hub}/topics/${topic}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(events),
  });
  assert.equal(response.status, 200);
  return (await response.json()).ids;
}

test("subscribe reads a topic from the start to its end, each event once, in order", async () => {
  const topic = `node/${Date.now()}`;
  await publish(topic, [{ event: "log", data: { line: 1 } }, { event: "log", data: { line: 2 } }]);
  const lines = [], states = [];
  await new Promise((resolve) => {
    const sub = subscribe(`${hub}/topics/${topic}/events`, {
      log: (data, event) => {
        lines.push([event.id, data.line]);
        if (lines.length === 2) {
          publish(topic, [{ event: "log", data: { line: 3 } }]).then(() =>
            fetch(`${hub}/topics/${topic}/close`, { method: "POST" }),
          );
        }
      },
      onState: (state) => {
        states.push(state);
        if (state === "closed") resolve(sub);
      },
    }, { after: 0, terminal: [] });
  });
  assert.deepEqual(lines, [[1, 1], [2, 2], [3, 3]]);
  assert.equal(states[0], "connecting");
  assert.equal(states.at(-1), "closed"); // the 204 at the end of a closed topic
});

test("stream runs an agent to its end and resolves its events URL against the hub", async () => {
  let text = "", start = null;
  const run = stream(`${hub}/agents/chat`, { message: "from node" }, {
    onStart: (s) => { start = s; },
    text_delta: ({ content }) => { text += content; },
  });
  const end = await run.done;
  assert.equal(end.event, "done");
  assert.equal(text, end.data.result.answer);
  assert.match(text, /from node/);
  assert.equal(start.eventsUrl, `${hub}/runs/${start.runId}/events`); // absolute, from the Location header
  assert.deepEqual(await cancel(start.runId, { base: hub }), { id: start.runId, status: "completed" });
});

test("errors are SSEHubErrors with the hub's code, or `unreachable`", async () => {
  await assert.rejects(stream(`${hub}/agents/nope`, {}).done, (err) => {
    assert.ok(err instanceof SSEHubError);
    assert.equal(err.status, 404);
    assert.equal(err.code, "not_found");
    return true;
  });
  await assert.rejects(cancel("nope", { base: hub }), (err) => err instanceof SSEHubError && err.status === 404);
  await assert.rejects(stream("http://127.0.0.1:9/agents/chat", {}).done, (err) => {
    assert.equal(err.code, "unreachable");
    assert.equal(err.message, "Cannot reach the server. Check the connection and try again.");
    return true;
  });
  assert.equal(healthUrl(`${hub}/sse/runs/x/events`), `${hub}/sse/healthz`);
});
