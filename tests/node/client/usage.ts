// Compiled by tsc --noEmit (tsconfig.json): the package's types as an app would use them.
import { SSEHubError, cancel, stream, subscribe, type ConnectionState, type HubEvent } from "ssehub";

const sub = subscribe("/topics/build-42/events", {
  log: (data: { line: string }) => console.log(data.line),
  onState: (state: ConnectionState) => console.log(state),
}, { after: 0 });
sub.close();
const last: number | null = sub.lastEventId;

let runId: string | null = null;
const run = stream("/agents/chat", { message: "hi" }, {
  onStart: ({ runId: id }) => { runId = id; },
  text_delta: ({ content }: { content: string }) => console.log(content),
});
run.done.then((end: HubEvent | null) => console.log(end?.event, last)).catch((err: unknown) => {
  if (err instanceof SSEHubError) console.log(err.status, err.code, err.message);
});
if (runId !== null) void cancel(runId, { base: "" }).then(({ status }) => console.log(status));

// With access control: a token, or a function the client calls again for a fresh one; a run's own token.
const fresh = async (refused: string | null): Promise<string> => (await fetch(`/token?stale=${refused !== null}`)).text();
subscribe("/topics/build-42/events", {}, { token: fresh }).close();
stream("/agents/chat", { message: "hi" }, {
  onStart: ({ runId: id, runToken }) => {
    if (id !== null && runToken !== null) void cancel(id, { token: runToken });
  },
}, { token: "a-token" });
