"""slimbench.harness: the only room that knows about suites, files and the grid; it imports every room below it.

Split by job: `run` (suites, cells, executors, the model cache, records), `measure` (what a deployed model is and
how well it does), `report` (leaderboards and studies from the records), `replicate` (published claims and the
comparison of two result folders), and `cli` (the `slimbench` command).
"""
