#!/usr/bin/env node
// The protocol's own TypeScript client (@durable-streams/client) against a server, for tests:
//   node ds-client.mjs read URL [--live sse|long-poll|false] [--offset OFFSET]
//       prints each JSON message of the stream as one line, until the stream is closed (or, with
//       --live false, up to date); then one line {"end": offset}
//   node ds-client.mjs write URL JSON...
//       creates the stream as application/json, appends each JSON value in its own request, closes it
import { DurableStream } from "@durable-streams/client"

const [command, url, ...rest] = process.argv.slice(2)
if (command === "read") {
  let live = "sse"
  let offset
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "--live") live = rest[++i] === "false" ? false : rest[i]
    else if (rest[i] === "--offset") offset = rest[++i]
  }
  const handle = new DurableStream({ url, contentType: "application/json" })
  const res = await handle.stream({ live, offset, json: true })
  for await (const item of res.jsonStream()) console.log(JSON.stringify(item))
  console.log(JSON.stringify({ end: res.offset }))
} else if (command === "write") {
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  for (const text of rest) await handle.append(text)
  await handle.close()
  console.log(JSON.stringify({ written: rest.length }))
} else {
  console.error("usage: ds-client.mjs read URL [--live MODE] [--offset OFFSET] | write URL JSON...")
  process.exit(2)
}
