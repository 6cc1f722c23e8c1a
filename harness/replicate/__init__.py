"""Replication: published claims and the rules that judge them (`claims`), the verdict table built from the records
(`replication`), and the comparison of a fresh run with committed records (`compare`, `slimbench reproduce`).
"""
