"""The pieces of ``scripts/bench.py``: one module per measurement, plus the
shared plumbing (worker and process plumbing, the raw baselines, reporting,
the command line). docs/BENCHMARKS.md says what each measurement means."""
