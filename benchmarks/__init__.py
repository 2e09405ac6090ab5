"""routescript benchmarks: SIPp scenarios and the harness that finds the highest sustainable rate
(run `python -m benchmarks --help`; documented in docs/benchmarks.md).
Not collected by pytest, not run in CI."""
