#!/usr/bin/env node
// The published reference Node server (@durable-streams/server, in memory), for side-by-side runs:
//   node reference-server.mjs [--port 4437] [--long-poll-timeout-ms 500]
// Prints its URL once it listens; stops on SIGTERM or SIGINT.
import { DurableStreamTestServer } from "@durable-streams/server"

const opts = { port: 4437, longPollTimeout: 500 }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--port") opts.port = Number(argv[++i])
  else if (argv[i] === "--long-poll-timeout-ms") opts.longPollTimeout = Number(argv[++i])
  else throw new Error(`unknown argument ${argv[i]}`)
}
const server = new DurableStreamTestServer({ host: "127.0.0.1", ...opts })
console.log(await server.start())
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    await server.stop()
    process.exit(0)
  })
}
