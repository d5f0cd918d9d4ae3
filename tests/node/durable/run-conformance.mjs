#!/usr/bin/env node
// Run the Durable Streams conformance suite against a server that is already running, and write a
// JSON summary: per top-level group, how many tests passed and failed, and the names of the failures.
//
//   node run-conformance.mjs http://127.0.0.1:8000 [--out summary.json] [--long-poll-timeout-ms 20000]
//
// It starts no server. It exits 0 when the suite ran (whatever its result), 2 when the server does
// not answer or the suite could not run; the caller decides what result is good enough.
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const here = dirname(fileURLToPath(import.meta.url))

function parseArgs(argv) {
  const args = { baseUrl: null, out: null, longPollTimeoutMs: "20000" }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === "--out") args.out = argv[++i]
    else if (arg === "--long-poll-timeout-ms") args.longPollTimeoutMs = argv[++i]
    else if (!args.baseUrl && !arg.startsWith("--")) args.baseUrl = arg.replace(/\/+$/, "")
    else throw new Error(`unknown argument ${arg}`)
  }
  if (!args.baseUrl) throw new Error("usage: run-conformance.mjs BASE_URL [--out FILE] [--long-poll-timeout-ms MS]")
  return args
}

async function answers(baseUrl) {
  // Any HTTP answer will do (a 404 for a stream that does not exist is the likely one).
  try {
    await fetch(`${baseUrl}/v1/stream/__conformance-probe`, { method: "HEAD", signal: AbortSignal.timeout(3000) })
    return true
  } catch {
    return false
  }
}

function summarise(report, args, seconds) {
  const groups = {}
  let passed = 0
  let failed = 0
  let skipped = 0
  for (const file of report.testResults) {
    for (const test of file.assertionResults) {
      const group = test.ancestorTitles[0] ?? "(top level)"
      const g = (groups[group] ??= { passed: 0, failed: 0, skipped: 0, failing: [] })
      if (test.status === "passed") {
        g.passed++
        passed++
      } else if (test.status === "failed") {
        g.failed++
        failed++
        g.failing.push({
          name: [...test.ancestorTitles.slice(1), test.title].join(" > "),
          message: (test.failureMessages?.[0] ?? "").split("\n")[0].slice(0, 300),
        })
      } else {
        g.skipped++
        skipped++
      }
    }
    if (file.status === "failed" && file.assertionResults.length === 0) {
      throw new Error(`the suite did not run: ${file.message}`)
    }
  }
  return {
    suite: "@durable-streams/server-conformance-tests",
    version: JSON.parse(readFileSync(join(here, "node_modules/@durable-streams/server-conformance-tests/package.json"))).version,
    baseUrl: args.baseUrl,
    longPollTimeoutMs: Number(args.longPollTimeoutMs),
    date: new Date().toISOString(),
    seconds,
    total: passed + failed,
    passed,
    failed,
    skipped,
    groups,
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  if (!(await answers(args.baseUrl))) {
    console.error(`run-conformance: nothing answers at ${args.baseUrl}; start the server first`)
    return 2
  }
  const work = mkdtempSync(join(tmpdir(), "ds-conformance-"))
  const raw = join(work, "vitest.json")
  const started = Date.now()
  try {
    const run = spawnSync(
      process.execPath,
      [join(here, "node_modules/vitest/vitest.mjs"), "run", "--reporter=dot", "--reporter=json", `--outputFile.json=${raw}`],
      {
        cwd: here,
        stdio: ["ignore", "inherit", "inherit"],
        env: { ...process.env, DS_BASE_URL: args.baseUrl, DS_LONG_POLL_TIMEOUT_MS: args.longPollTimeoutMs },
      },
    )
    let report
    try {
      report = JSON.parse(readFileSync(raw, "utf8"))
    } catch {
      console.error(`run-conformance: vitest wrote no report (exit ${run.status})`)
      return 2
    }
    const summary = summarise(report, args, Math.round((Date.now() - started) / 100) / 10)
    const text = JSON.stringify(summary, null, 2)
    if (args.out) writeFileSync(args.out, text + "\n")
    else console.log(text)
    console.error(`run-conformance: ${summary.passed}/${summary.total} passed in ${summary.seconds}s`)
    return 0
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

process.exitCode = await main()
