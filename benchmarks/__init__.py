"""ssehub's own benchmarks (not part of the installed package): `./scripts/bench --help`.

- ssebench/: the Go load generator (fan-out, latency, idle memory, replay, chat, streamed ingest,
  agent runs), built with `go build` by the runner;
- run.py: runs the scenarios against `ssehub serve`, and Nchan and a naive sse-starlette broadcast
  side by side; scenarios.py, systems.py, generator.py, report.py and plots.py are its parts;
- agents_app.py: `ssehub serve` with a benchmark agent, for the in-process agents scenario;
- naive_baseline.py: the broadcast a Python user would write first;
- redis_commands.py: Redis commands per published event.
"""
