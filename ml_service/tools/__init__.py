"""Command-line tools over the engine: profiler, bench, planner, accuracy benchmark, demo,
checkpoint import."""
