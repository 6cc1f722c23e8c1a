"""slimbench.harness: planning, caching, execution, measurement orchestration, records, reporting and the CLI.

The only room that knows about suites, files and the grid; it imports every room below it.

Kept import-light on purpose: `tasks`, `baselines` and `methods` import the small shared utilities
(`slimbench.core.registry`, `slimbench.core.params`, `slimbench.core.errors`) without pulling in the rest.
"""
