"""Smaller entry points, run from the project root as modules: `python -m tools.plot out-x`,
`python -m tools.novelty`, `python -m tools.consolidate` (a sharded checkpoint as one file), `python -m tools.memory`
(memory per GPU, estimated), `python -m tools.chat_tasks` (a task set with checkable answers),
`python -m tools.arena` (the arena's leaderboard), `python -m tools.arena_voter` (a scripted voter), and the
benchmarks `tools.bench_generate`, `tools.bench_eval`, `tools.bench_prepare`, `tools.bench_lora`,
`tools.bench_fsdp`."""
