"""Tasks: the built-in arithmetic task, real dataset readers and prompt templates.

Modules are imported one by one (`scorejax.tasks.arith`, `.gsm8k`,
`.math_data`, `.processbench`, `.prm800k`, `.templates`), so that reading a
JSONL file never pays for importing tensorflow-datasets.
"""
