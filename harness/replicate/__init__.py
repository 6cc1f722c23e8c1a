"""Replication: published claims and the rules that judge them — the fixed words (`claim_terms`: verdict names, rule
caps, measurable values), the schema of a claim (`claim_schema`), reading configs/claims.yaml (`claims_file`), the
rules and their verdicts (`claims`), the wording of figures (`claim_text`) — the values read from the records with
their intervals (`measurements`), the premises a row needs and the second conditions a claim states (`premises`),
each claim measured where it says, with its verdicts and counts (`evaluation`), the verdict table written from them
(`replication`), and the comparison of a fresh run with committed records (`compare`, `slimbench reproduce`).
"""
