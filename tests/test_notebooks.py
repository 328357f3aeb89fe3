"""The Colab notebooks: each runs end to end (shrunk by its parameter cell), outputs are stripped, links agree.

The runs are marked `notebooks`: the default `pytest` leaves them out (they
take minutes); `pytest -m notebooks` runs them, as .ci/run does after the suite.

Every notebook is executed with a cell injected after its `parameters` cell
(as papermill does): the method notebooks with `SMOKE = True` and a temporary
workdir, the tour with a tiny random checkpoint instead of the hub model. A
cell that raises fails the test with the cell's traceback.
"""

import os
import pathlib
import re
import tomllib

import pytest
from hf_fixtures import VOCAB, build_hf_model, save_char_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
METHODS = ("score", "deepcritic", "spc", "critique_loop")


def _read(path):
  import nbformat
  return nbformat.read(path, as_version=4)


def execute(path, injected: str, tmp_path):
  """Runs the notebook with `injected` after its parameters cell; returns the executed notebook."""
  import nbclient
  import nbformat
  nb = _read(path)
  at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(injected))
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute(env=env)
  return nb


def _text(nb) -> str:
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      out.append(o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values()))
  return "\n".join(out)


def test_one_notebook_per_method_and_a_tour():
  assert {p.stem for p in NOTEBOOKS} == {*METHODS, "tour"}


@pytest.mark.notebooks
@pytest.mark.parametrize("method", METHODS)
def test_method_notebook_runs(method, tmp_path):
  workdir = tmp_path / "run"
  nb = execute(ROOT / "colab" / f"{method}.ipynb", f"SMOKE = True\nWORKDIR = {str(workdir)!r}", tmp_path)
  assert (workdir / "eval.json").exists() and (workdir / "curves.png").exists()
  text = _text(nb)
  assert "image/png" in str([o.get("data", {}).keys() for c in nb.cells for o in c.get("outputs", [])])
  assert "<table>" in text  # the decoded examples
  assert "Skipped: " in text and "needs a GPU or TPU runtime" in text  # the real-checkpoint section, on this CPU


@pytest.mark.notebooks
def test_tour_runs_on_a_local_checkpoint(tmp_path):
  checkpoint = tmp_path / "tiny_qwen2"
  build_hf_model("qwen2", initializer_range=0.3, vocab_size=VOCAB, eos_token_id=2).save_pretrained(checkpoint)
  save_char_tokenizer(checkpoint)
  nb = execute(ROOT / "colab" / "tour.ipynb", f"CHECKPOINT = {str(checkpoint)!r}\nWORKDIR = {str(tmp_path / 'w')!r}",
               tmp_path)
  text = _text(nb)
  diff = float(re.search(r"max_abs_logit_diff=([0-9.e+-]+)", text).group(1))
  assert diff < 1e-3
  assert "ids=" in text  # the sampler's output
  assert '"mean_f1"' in text and '"delta"' in text  # both scored files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
  for cell in _read(path).cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: a cell keeps its outputs"


def test_repository_links_agree():
  """The install cells and the README's badges point at the repository pyproject.toml names."""
  repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
  owner_name = repository.removeprefix("https://github.com/")
  readme = (ROOT / "README.md").read_text()
  for path in NOTEBOOKS:
    source = "\n".join(c.source for c in _read(path).cells)
    assert f'REPOSITORY = "{repository}"' in source, path.name
    badge = f"https://colab.research.google.com/github/{owner_name}/blob/main/colab/{path.name}"
    assert badge in source and badge in readme, path.name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("smoke", [False, True])
def test_notebook_sizes_are_config_keys(method, smoke):
  """The sizes a notebook runs at (the Colab size and the smoke size) name keys of its config, with their types."""
  from scorejax import notebook
  cell = next(c.source for c in _read(ROOT / "colab" / f"{method}.ipynb").cells if c.source.startswith("CONFIG ="))
  scope = {"SMOKE": smoke}
  exec(cell, scope)  # pylint: disable=exec-used
  assert scope["CONFIG"].startswith(f"arith_{method}.py")
  notebook.check_config(scope["CONFIG"], scope["OVERRIDES"])


def test_check_config_names_a_wrong_key():
  from scorejax import notebook
  with pytest.raises(KeyError, match="no key 'stage1.stepz'"):
    notebook.check_config("arith_score.py", {"stage1.stepz": 3})
