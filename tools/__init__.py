"""Smaller entry points, run from the project root as modules: `python -m tools.plot out-x`,
`python -m tools.novelty`, `python -m tools.bench_generate`, `python -m tools.bench_prepare`."""
