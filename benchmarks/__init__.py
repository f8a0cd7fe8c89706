"""Issue 4's benchmark suite: pachka_actors against what a user would otherwise write.

Run every comparison with `python -m benchmarks` (add `--quick` for a CI smoke run).
Each benchmark measures its baseline in the same run, checks that every message
arrived once and in order, and reports a median over several repetitions.
"""
