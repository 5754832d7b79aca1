"""Results: RunResult, run files, comparison of runs."""
