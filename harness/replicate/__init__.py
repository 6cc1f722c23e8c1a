"""Replication: published claims and the rules that judge them — the fixed words (`claim_terms`: verdict names, rule
caps, measurable values), the schema of a claim (`claim_schema`), reading configs/claims.yaml (`claims_file`), the
rules and their verdicts (`claims`), the wording of figures (`claim_text`) — the verdict table built from the
records (`replication`), and the comparison of a fresh run with committed records (`compare`, `slimbench reproduce`).
"""
