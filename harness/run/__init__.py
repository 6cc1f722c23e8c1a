"""Running a suite: its config and cells (`suite`; `suite_files` reads a file and merges its `extends:` bases,
`suite_rules` the grid's pattern rules), one cell end to end (`runner`), where cells run (`executors`,
`shards`, `plan`), trained models reused between cells (`cache`), and what a run leaves behind: the atomic JSON
record (`records`), the machine and versions it ran on (`environment`, `numerics`) and the Weights & Biases log
(`tracking`). Nothing here decides what a figure means; that is `report` and `replicate`.
"""
