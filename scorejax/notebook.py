"""What the Colab notebooks (colab/*.ipynb) share: run a command with its output streamed, show what a run wrote.

A notebook runs the same commands a terminal would (`python -m scorejax.main
...` from the repository root), so what it shows is what the README's
commands give; these helpers only stream their output into the notebook and
lay out the results: the run's PNGs, its table (`metrics.format_table`), and
decoded examples side by side.
"""

from __future__ import annotations

import html
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping, Sequence

from scorejax import config_blocks, metrics


def repo_root() -> pathlib.Path:
  """The checkout that holds this package and its configs/ (an editable install or a clone on sys.path)."""
  root = pathlib.Path(__file__).resolve().parents[1]
  if not (root / "configs").is_dir():
    raise FileNotFoundError(f"{root / 'configs'} does not exist: the notebooks run from a clone of the repository "
                            "(its install cell clones it), not from an installed wheel, which has no configs/")
  return root


def accelerator() -> str | None:
  """"gpu" or "tpu" when JAX sees one, else None (a CPU runtime)."""
  import jax  # pylint: disable=import-outside-toplevel
  platform = jax.devices()[0].platform
  return None if platform == "cpu" else platform


def overrides_args(overrides: Mapping[str, object]) -> list[str]:
  """--config.KEY=VALUE flags, values written as the command line reads them (tuples as "(1, 2)")."""
  return [f"--config.{key}={value}" for key, value in overrides.items()]


def run(args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
  """Runs `python ARGS...` from the repository root, printing its output as it comes; raises when it fails."""
  command = [sys.executable, *args]
  print("$ python " + " ".join(args), flush=True)
  # progress bars redraw with a carriage return, which a notebook shows as a new line: one line per 20 s
  env = dict(os.environ, TQDM_MININTERVAL="20", **(env or {}))
  proc = subprocess.Popen(command, cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  tail = []
  for line in proc.stdout:
    print(line, end="", flush=True)
    tail = (tail + [line])[-40:]
  if proc.wait() != 0:
    raise RuntimeError(f"`python {' '.join(args)}` exited with {proc.returncode}; its last lines:\n" + "".join(tail))


def run_main(config: str, workdir: str, overrides: Mapping[str, object] | None = None) -> dict:
  """Runs (or resumes) the main job `configs/<config>` in `workdir`; returns its eval.json."""
  run(["-m", "scorejax.main", f"--config=configs/{config}", f"--workdir={workdir}", *overrides_args(overrides or {})])
  return results(workdir)


def results(workdir: str) -> dict:
  return json.loads(pathlib.Path(workdir, "eval.json").read_text())


def show_images(workdir: str, *names: str) -> None:
  from IPython.display import Image, display  # pylint: disable=import-outside-toplevel
  for name in names:
    display(Image(filename=os.path.join(workdir, name)))


def show_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> None:
  """The experiment's table as it prints it: one row per name, values in %."""
  print(metrics.format_table(rows, columns))


def side_by_side(examples: Sequence[Mapping[str, object]], columns: Sequence[str]):
  """An HTML table, one row per example and one column per key, each cell's text kept as written."""
  from IPython.display import HTML  # pylint: disable=import-outside-toplevel

  def cell(value) -> str:
    text = "\n".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"<td style='text-align:left;vertical-align:top'><pre>{html.escape(text)}</pre></td>"

  head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
  body = "".join("<tr>" + "".join(cell(e.get(c, "")) for c in columns) + "</tr>" for e in examples)
  return HTML(f"<table><tr>{head}</tr>{body}</table>")


def check_config(config: str, overrides: Mapping[str, object]) -> None:
  """Loads configs/<config> with `overrides` set, as the main job would, so a wrong key fails here and now."""
  config_blocks.set_keys(config_blocks.load_config(str(repo_root() / "configs" / config)), overrides,
                         where=f"configs/{config.partition(':')[0]}")


def skip_without_accelerator(what: str) -> bool:
  """True (and says why) on a CPU runtime, where `what` (a real checkpoint's run) would take hours."""
  if accelerator() is None:
    print(f"Skipped: {what} needs a GPU or TPU runtime (Runtime > Change runtime type); this runtime has only a "
          "CPU, where it would take hours.")
    return True
  return False


def hub_checkpoint(name: str, root: str = "/content/models") -> str:
  """A local HF checkpoint directory: `name` itself when it is one, else the hub model `name` downloaded under root."""
  if os.path.isdir(name):
    return name
  from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel
  return snapshot_download(name, local_dir=os.path.join(root, name.rsplit("/", 1)[-1]),
                           allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])


def processbench_file(subset: str, out_path: str, limit: int, root: str = "/content/data") -> str:
  """The first `limit` records of ProcessBench's `subset` (downloaded from Qwen/ProcessBench) as a JSONL file."""
  from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel

  from scorejax.tasks import processbench  # pylint: disable=import-outside-toplevel
  local = pathlib.Path(snapshot_download("Qwen/ProcessBench", repo_type="dataset",
                                         local_dir=os.path.join(root, "processbench")))
  found = sorted(p for p in local.rglob(f"*{subset}*") if p.suffix in (".json", ".jsonl", ".parquet"))
  if not found:
    raise FileNotFoundError(f"no {subset} file under {local}: {sorted(p.name for p in local.rglob('*'))}")
  solutions = list(processbench.read_processbench(str(found[0])))[:limit]
  processbench.write_jsonl(out_path, (s.to_record() for s in solutions))
  return out_path
