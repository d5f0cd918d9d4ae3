// Reads ssehub's ag-ui streams with @ag-ui/core and @ag-ui/client and prints what they assembled.
//
// AG-UI has no resume of its own: a client keeps the frames it received whole before its
// connection dropped, and ssehub's ids let it continue. So each connection is cut back to
// its last complete frame, and the connections of a case are joined into one body. Then:
//   - every event must pass @ag-ui/core's EventSchema (schemas entry point), unchanged;
//   - the events must pass @ag-ui/client's order verifier (verifyEvents), alone;
//   - the body is run through HttpAgent, the real client (parse, enforce, chunk
//     transform, verify, apply), which must finish without a problem or a warning.
// Output per case: the agent's messages, the run result and outcome, and the problems.
import { EventSchema } from '@ag-ui/core/schemas';
import { HttpAgent, verifyEvents } from '@ag-ui/client';
import { from, lastValueFrom, toArray } from 'rxjs';
import { byteStream, readCases, writeResults } from './sse-input.mjs';

const warnings = [];
console.warn = (...args) => warnings.push(args.map(String).join(' '));
console.error = (...args) => warnings.push(args.map(String).join(' '));

/** JSON with sorted keys: the schema may reorder fields, but must not change or drop one. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function received(text) {
  const end = text.lastIndexOf('\n\n');
  return end < 0 ? '' : text.slice(0, end + 2);
}

function eventsOf(body, problems) {
  const events = [];
  for (const frame of body.split('\n\n')) {
    const data = frame
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''));
    if (data.length === 0) continue;
    const event = JSON.parse(data.join('\n'));
    const parsed = EventSchema.safeParse(event);
    if (!parsed.success) problems.push(`schema: ${event.type}: ${parsed.error.message}`);
    else if (canonical(parsed.data) !== canonical(event)) problems.push(`schema changed ${event.type}: ${canonical(event)}`);
    events.push(event);
  }
  return events;
}

async function check({ name, connections, threadId, runId }) {
  const problems = [];
  warnings.length = 0;
  const body = connections.map(received).join('');
  const events = eventsOf(body, problems);
  try {
    await lastValueFrom(from(events).pipe(verifyEvents(), toArray()));
  } catch (error) {
    problems.push(`verifier: ${error.message}`);
  }
  const agent = new HttpAgent({
    url: 'http://ssehub.invalid/agent',
    threadId,
    fetch: async () => new Response(byteStream(body), { headers: { 'content-type': 'text/event-stream' } }),
  });
  let outcome = null;
  let runError = null;
  let result = null;
  try {
    const run = await agent.runAgent(
      { runId },
      {
        onRunFinishedEvent: (params) => {
          outcome = params.outcome;
        },
        onRunErrorEvent: ({ event }) => {
          runError = event.message;
        },
      },
    );
    result = run.result ?? null;
  } catch (error) {
    problems.push(`agent: ${error.message}`);
  }
  problems.push(...warnings.map((w) => `warning: ${w}`));
  return { name, messages: agent.messages, result, outcome, runError, events: events.length, problems };
}

const results = [];
for (const c of await readCases()) results.push(await check(c));
writeResults(results);
