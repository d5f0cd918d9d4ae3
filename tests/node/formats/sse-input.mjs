// What both checkers share: the cases on stdin, a body as a network would deliver it.
//
// stdin is JSON: {"cases": [{"name": "...", "connections": ["<SSE text>", ...], ...}]}. The
// connections are what successive connections of one reader received, in order: every one
// but the last was cut somewhere (possibly inside a frame), the next resumed from the last
// id the reader had. The results go to stdout as JSON, one per case, in order.

export async function readCases() {
  const parts = [];
  for await (const chunk of process.stdin) parts.push(chunk);
  return JSON.parse(Buffer.concat(parts).toString('utf8')).cases;
}

export function writeResults(results) {
  process.stdout.write(JSON.stringify({ results }));
}

/** The text as a byte stream in odd-sized pieces, so frames arrive split anywhere. */
export function byteStream(text, size = 37) {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}
