"""Tasks: the task protocol, the built-in arithmetic task, real dataset readers and prompt templates.

  base.py            the protocol experiments read (whole-answer and step tasks), streams seeded by name, make_task
  chat.py            chat-template probes (the end-of-turn token, an instruction appended after a turn)
  arith/             the built-in task: problems, check, noise, references, critiques, task
  math_task.py       GSM8K and MATH / MATH500 on an HF tokenizer
  gsm8k.py, math_data.py, processbench.py, prm800k.py, seed_critiques.py   readers of local files
  records.py         rows of .jsonl / .json / .parquet with their locations
  templates.py       prompts as data, and their output parsers

Modules are imported one by one, so that reading a JSONL file never pays for
importing tensorflow-datasets.
"""
