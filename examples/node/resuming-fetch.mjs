// A `fetch` for the AI SDK's DefaultChatTransport and AG-UI's HttpAgent that survives dropped connections.
//
// Both clients read one HTTP response per run and fail when its body breaks off. ssehub gives
// every frame an id and resumes after any of them, so this fetch hands the client one body
// that never breaks: when a connection drops (or the server restarts and drains it), it asks
// the conversation's stream URL for what follows the last complete frame (`Last-Event-ID`),
// and goes on where the first body stopped. The client sees every frame once, in order.
//
//   new DefaultChatTransport({ api, fetch: resumingFetch() })     reconnects to {api}/{id}/stream
//   new HttpAgent({ url, fetch: resumingFetch() })                reconnects to {url}/{threadId}/stream

const END = { 'ai-sdk': (data) => data === '[DONE]', 'ag-ui': (data) => /"type":"RUN_(FINISHED|ERROR)"/.test(data) };

export function resumingFetch({ fetch = globalThis.fetch, retries = 10, onReconnect = () => {} } = {}) {
  return async (input, init = {}) => {
    const url = String(input instanceof Request ? input.url : input);
    // The POST that starts a run names its conversation; the reconnect GET already is the stream URL.
    const body = typeof init.body === 'string' ? JSON.parse(init.body) : {};
    const conversation = body.threadId ?? body.id;
    const streamUrl = init.method === 'POST' ? `${url.replace(/\/$/, '')}/${encodeURIComponent(conversation)}/stream` : url;
    const first = await fetch(input, init);
    if (!first.ok || !first.body || first.status === 204) return first;
    const format = first.headers.get('x-vercel-ai-ui-message-stream') ? 'ai-sdk' : 'ag-ui';
    const frames = connections(first, {
      reconnect: (lastId, attempt) => {
        onReconnect({ lastId, attempt });
        const headers = { ...headersOf(init.headers), accept: 'text/event-stream', 'last-event-id': lastId ?? '0' };
        return fetch(streamUrl, { method: 'GET', headers, signal: init.signal });
      },
      ended: END[format],
      retries,
      signal: init.signal,
    });
    const encoder = new TextEncoder();
    const stream = new ReadableStream({
      async pull(controller) {
        try {
          const { value, done } = await frames.next();
          if (done) controller.close();
          else controller.enqueue(encoder.encode(value));
        } catch (error) {
          controller.error(error);
        }
      },
      cancel() {
        return frames.return();
      },
    });
    return new Response(stream, { status: first.status, headers: first.headers });
  };
}

/** The complete frames of successive connections, as text; a frame cut off by a drop is asked for again. */
async function* connections(first, { reconnect, ended, retries, signal }) {
  let response = first;
  let lastId = null;
  let finished = false;
  for (let attempt = 1; ; attempt++) {
    try {
      if (response === null) {
        response = await reconnect(lastId, attempt);
        if (response.status === 204) return; // nothing after lastId: the run ended there
        if (!response.ok || !response.body) {
          throw Object.assign(new Error(`resuming the stream failed: HTTP ${response.status}`), { fatal: true });
        }
      }
      const decoder = new TextDecoder();
      const reader = response.body.getReader();
      let pending = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        for (let end = pending.indexOf('\n\n'); end >= 0; end = pending.indexOf('\n\n')) {
          const frame = pending.slice(0, end + 2);
          pending = pending.slice(end + 2);
          const id = /^id: ?(.*)$/m.exec(frame);
          if (id) lastId = id[1];
          const data = /^data: ?(.*)$/m.exec(frame);
          if (data && ended(data[1])) finished = true;
          yield frame;
        }
      }
    } catch (error) {
      if (error.fatal || signal?.aborted || attempt > retries) throw error;
    }
    if (finished || signal?.aborted) return;
    // Ended before its last frame (a drop, or a draining server): resume after the last complete frame.
    response = null;
    await new Promise((resolve) => setTimeout(resolve, Math.min(50 * attempt, 1000)));
  }
}

function headersOf(headers) {
  return headers instanceof Headers ? Object.fromEntries(headers) : { ...(headers ?? {}) };
}
