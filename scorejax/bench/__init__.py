"""Benchmarks, one module per benchmark: `python -m scorejax.bench NAME [ARGS...]`.

A benchmark is a module in this package that exposes `main(argv) -> int`
(argv without the benchmark's name). The dispatcher in `__main__` finds
modules by name, so adding `NAME.py` here is all it takes to add one.
Benchmarks print a table and, given `--out=FILE.json`, write their figures
(`emit` does both).
"""

import json


def emit(result: dict, table: str, out: str | None) -> None:
  """Print a benchmark's table and, when `out` is a path, write `result` there as JSON."""
  print(table)
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {out}")
