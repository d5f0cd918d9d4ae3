// Reads ssehub's ai-sdk streams with the `ai` package itself and prints what it assembled.
//
// Each connection is parsed as DefaultChatTransport parses a response (parseJsonEventStream
// with uiMessageChunkSchema: every chunk must pass the schema), and the chunks of all the
// connections of a case go, in order, through one readUIMessageStream: the reader's message
// state survives the cut, as useChat's does when it resumes after a dropped connection.
// Output per case: the final message, the chunk count, the texts of `error` chunks, and the
// problems (schema failures, chunks the reader refused): a correct stream has none.
import { UIMessageStreamError, parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';
import { byteStream, readCases, writeResults } from './sse-input.mjs';

async function check({ name, connections }) {
  const problems = [];
  const chunks = [];
  for (const [i, text] of connections.entries()) {
    for await (const parsed of parseJsonEventStream({ stream: byteStream(text), schema: uiMessageChunkSchema })) {
      if (parsed.success) chunks.push(parsed.value);
      else problems.push(`connection ${i}: not a UI message chunk: ${parsed.error.message}`);
    }
  }
  const errorTexts = new Set(chunks.filter((c) => c.type === 'error').map((c) => c.errorText));
  const errors = [];
  let message = null;
  const stream = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  const onError = (error) => {
    if (!(error instanceof UIMessageStreamError) && errorTexts.has(error?.message)) errors.push(error.message);
    else problems.push(`reader: ${error?.message ?? error}`);
  };
  for await (const snapshot of readUIMessageStream({ stream, onError })) message = snapshot;
  return { name, message, chunks: chunks.length, errors, problems };
}

const results = [];
for (const c of await readCases()) results.push(await check(c));
writeResults(results);
