#!/usr/bin/env node
// A plain EventSource (the npm `eventsource` package, the WHATWG API) reading an ssehub topic:
//   node eventsource-read.mjs URL
// Prints {"id", "event", "data"} per event and exits once the server ends the stream for good (a
// reconnect answered 204 closes an EventSource), so a closed topic ends it.
import { EventSource } from "eventsource"

const source = new EventSource(process.argv[2])
const print = (e) => console.log(JSON.stringify({ id: e.lastEventId, event: e.type, data: e.data }))
source.onmessage = print
for (const name of ["text_delta", "done", "log", "reset"]) source.addEventListener(name, print)
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) process.exit(0)
}
setTimeout(() => {
  console.error("eventsource-read: no end within 30 s")
  process.exit(1)
}, 30000)
