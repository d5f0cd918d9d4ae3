// useChat without a browser: the AI SDK's own chat engine (AbstractChat, what React's useChat wraps)
// with its DefaultChatTransport, against an ssehub chat endpoint.
//
//   node use-chat.mjs http://127.0.0.1:8000/api/chat/assistant "What is ssehub?" [scenario]
//
// Scenarios (the result is printed as JSON):
//   answer   send a message; the transport's fetch resumes dropped connections (resuming-fetch.mjs)
//   reload   send, press Stop once text arrives (the transport's abort: the run goes on), then, as a
//            reloaded page does, a new chat with the same id resumes the run (`resumeStream()`: ssehub
//            answers the whole run, which useChat replays); once it is over, resuming again gets 204
//   cancel   send, and at the first text Stop for real: `stop()` and POST {api}/{id}/cancel
import { AbstractChat, DefaultChatTransport } from 'ai';
import { resumingFetch } from './resuming-fetch.mjs';

/** Chat state in plain objects: what @ai-sdk/react keeps in React state. */
class PlainState {
  constructor(messages, onChange) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
    this.onChange = onChange;
  }
  pushMessage(message) {
    this.messages = [...this.messages, message];
    this.onChange(this.messages);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
    this.onChange(this.messages);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.with(index, message);
    this.onChange(this.messages);
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {
  constructor({ messages = [], onChange = () => {}, ...init }) {
    super({ ...init, state: new PlainState(messages, onChange) });
  }
}

const [api, question = 'What is ssehub?', scenario = 'answer'] = process.argv.slice(2);
const id = `chat-${scenario}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
const data = [];
const textOf = (message) => (message?.parts ?? []).filter((p) => p.type === 'text').map((p) => p.text).join('');

/** A chat that calls `onText` once, when the assistant's first text arrives. */
function chat({ onText, messages, ...options } = {}) {
  let called = false;
  const onChange = (all) => {
    const last = all.at(-1);
    if (!called && onText && last?.role === 'assistant' && textOf(last)) {
      called = true;
      queueMicrotask(onText);
    }
  };
  return new Chat({ id, messages, onChange, onData: (part) => data.push(part.type), ...options });
}

// Every request the transports make, as "METHOD status": what the server answered each time.
const requests = [];
const logged = (fetch = globalThis.fetch) => async (url, init) => {
  const response = await fetch(url, init);
  requests.push(`${init?.method ?? 'GET'} ${response.status}`);
  return response;
};
const result = { scenario, id, requests };
if (scenario === 'answer') {
  let reconnects = 0;
  const fetch = resumingFetch({ fetch: logged(), onReconnect: () => reconnects++ });
  const c = chat({ transport: new DefaultChatTransport({ api, fetch }) });
  await c.sendMessage({ text: question });
  Object.assign(result, { status: c.status, error: c.error?.message ?? null, messages: c.messages, reconnects });
} else if (scenario === 'reload') {
  const first = chat({ transport: new DefaultChatTransport({ api, fetch: logged() }), onText: () => first.stop() });
  await first.sendMessage({ text: question });
  result.stopped = textOf(first.lastMessage);
  // The reloaded page: the user's message (which the app saved), and the run resumed from ssehub.
  const transport = new DefaultChatTransport({ api, fetch: logged() });
  const reloaded = chat({ transport, messages: first.messages.slice(0, 1) });
  await reloaded.resumeStream();
  Object.assign(result, { status: reloaded.status, error: reloaded.error?.message ?? null, messages: reloaded.messages });
  const before = JSON.stringify(reloaded.messages);
  await reloaded.resumeStream(); // the run is over: 204, and nothing changes
  result.unchangedAfterEnd = JSON.stringify(reloaded.messages) === before && reloaded.status === 'ready';
} else if (scenario === 'cancel') {
  let cancel;
  const cancelled = new Promise((resolve) => {
    cancel = resolve;
  });
  const c = chat({
    transport: new DefaultChatTransport({ api, fetch: logged() }),
    onText: () => {
      c.stop(); // the browser stops reading; the cancel stops the agent
      cancel(fetch(`${api}/${id}/cancel`, { method: 'POST' }).then(async (r) => ({ http: r.status, ...(await r.json()) })));
    },
  });
  await c.sendMessage({ text: question });
  result.cancel = await cancelled;
  result.stopped = textOf(c.lastMessage);
  const later = chat({ transport: new DefaultChatTransport({ api, fetch: logged() }), messages: c.messages.slice(0, 1) });
  await later.resumeStream(); // a cancelled run is over: 204, nothing to resume
  result.afterCancel = later.messages.length;
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
result.data = data;
process.stdout.write(JSON.stringify(result));
