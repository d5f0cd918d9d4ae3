// How long a late joiner takes to hold the whole message, read with the packages a front end uses.
//
//   node paint.mjs <format: ai-sdk | ag-ui> <expected text length> <repeat> <url>...
//
// ai-sdk: the response is parsed as DefaultChatTransport parses it (parseJsonEventStream with
// uiMessageChunkSchema) into readUIMessageStream, as useChat does; ag-ui: @ag-ui/client's HttpAgent
// runs against the URL. The clock starts before the request and stops at the first message state
// whose text is complete (the first complete paint). Prints {"ms": [...], "chunks": [...]} per URL,
// each URL read `repeat` times, in turn, so that a change in the machine's load touches them alike.
import { HttpAgent } from '@ag-ui/client';
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';

const [format, expected, repeat, ...urls] = process.argv.slice(2);
const length = Number(expected);

async function aiSdk(url) {
  const start = performance.now();
  const response = await fetch(url, { headers: { accept: 'text/event-stream' } });
  let chunks = 0;
  const stream = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        if (!chunk.success) throw chunk.error;
        chunks++;
        controller.enqueue(chunk.value);
      },
    }),
  );
  let painted = null;
  for await (const message of readUIMessageStream({ stream })) {
    const text = message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
    if (painted === null && text.length >= length) painted = performance.now() - start;
  }
  return { ms: painted, chunks };
}

async function agUi(url) {
  const start = performance.now();
  let events = 0;
  let painted = null;
  const agent = new HttpAgent({
    url,
    // HttpAgent posts a RunAgentInput; a late joiner reads the run that is there instead.
    fetch: () => fetch(url, { headers: { accept: 'text/event-stream' } }),
  });
  await agent.runAgent(
    {},
    {
      onEvent: () => {
        events++;
      },
      onMessagesChanged: ({ messages }) => {
        const text = messages.filter((m) => m.role === 'assistant').map((m) => m.content ?? '').join('');
        if (painted === null && text.length >= length) painted = performance.now() - start;
      },
    },
  );
  return { ms: painted, chunks: events };
}

const read = format === 'ai-sdk' ? aiSdk : agUi;
const results = urls.map(() => ({ ms: [], chunks: [] }));
for (let i = 0; i < Number(repeat); i++) {
  for (const [j, url] of urls.entries()) {
    const { ms, chunks } = await read(url);
    results[j].ms.push(ms);
    results[j].chunks.push(chunks);
  }
}
process.stdout.write(JSON.stringify(results));
