"""python -m scorejax.bench NAME [ARGS...]: run the benchmark module scorejax.bench.NAME."""

import importlib
import pkgutil
import sys

import scorejax.bench


def available() -> list[str]:
  """Benchmark names: the public modules of this package."""
  return sorted(m.name for m in pkgutil.iter_modules(scorejax.bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
  names = available()
  usage = f"usage: python -m scorejax.bench {{{','.join(names)}}} [ARGS...]   (NAME --help for its flags)"
  if not argv or argv[0] in ("-h", "--help"):
    print(usage)
    return 0 if argv else 2
  if argv[0] not in names:
    print(f"unknown benchmark {argv[0]!r}; known: {', '.join(names)}\n{usage}", file=sys.stderr)
    return 2
  return importlib.import_module(f"scorejax.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
