// The official Durable Streams conformance suite, pointed at a server that is already running.
// Started by run-conformance.mjs, which checks that the server answers first: against a port where
// nothing listens the suite's client retries with backoff for about eleven minutes.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DS_BASE_URL
if (!baseUrl) throw new Error("set DS_BASE_URL to the server's base URL (the suite adds /v1/stream/...)")

runConformanceTests({
  baseUrl,
  longPollTimeoutMs: Number(process.env.DS_LONG_POLL_TIMEOUT_MS || 20000),
})
