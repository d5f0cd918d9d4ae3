// An AG-UI client (@ag-ui/client's HttpAgent) running an ssehub agent, resuming if the connection drops.
//
//   node ag-ui.mjs http://127.0.0.1:8000/api/ag-ui/assistant "What is ssehub?"
//
// HttpAgent posts a RunAgentInput and reads the AG-UI events of the run; AG-UI has no resume of its
// own, so a dropped connection would end the run for the client. With resuming-fetch.mjs, the body
// HttpAgent reads continues from the thread's stream URL after the last event it got (Last-Event-ID),
// and the run arrives whole, each event once: HttpAgent's own verifier would reject anything else.
// Prints the agent's messages, the run's result and outcome, and how often the connection was resumed.
import { HttpAgent } from '@ag-ui/client';
import { resumingFetch } from './resuming-fetch.mjs';

const [url, question = 'What is ssehub?'] = process.argv.slice(2);
const threadId = `thread-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
let reconnects = 0;
const agent = new HttpAgent({
  url,
  threadId,
  initialMessages: [{ id: 'question-1', role: 'user', content: question }],
  fetch: resumingFetch({ onReconnect: () => reconnects++ }),
});
const events = [];
let outcome = null;
const { result } = await agent.runAgent(
  { runId: `run-${Date.now()}` },
  {
    onEvent: ({ event }) => {
      events.push(event.type);
    },
    onRunFinishedEvent: (params) => {
      outcome = params.outcome;
    },
  },
);
process.stdout.write(JSON.stringify({ threadId, messages: agent.messages, result, outcome, events, reconnects }));
