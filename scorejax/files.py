"""Every file a run writes to its workdir, and reads back, goes through here: local paths and `gs://` alike.

Paths are strings; one with a scheme (`gs://bucket/run`, or any other URI
etils.epath knows, as orbax does) is handled by `etils.epath`, a local one by
the OS. What differs is kept here: a local write is atomic through a temporary
file and a rename, an object store's write of a whole object already is; an
object cannot be appended to, so `append_text` rewrites it (callers that
append often buffer first: `metrics.MetricWriter`).
"""

from __future__ import annotations

import io
import os
import shutil


def is_remote(path: str) -> bool:
  return "://" in os.fspath(path)


def _epath(path: str):
  from etils import epath  # pylint: disable=import-outside-toplevel
  return epath.Path(path)


def exists(path: str) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isfile(path: str) -> bool:
  if is_remote(path):
    p = _epath(path)
    return p.exists() and not p.is_dir()
  return os.path.isfile(path)


def isdir(path: str) -> bool:
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  if is_remote(path):
    return sorted(p.name for p in _epath(path).iterdir())
  return sorted(os.listdir(path))


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    return _epath(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
  """Writes atomically: a reader never sees half a file."""
  if is_remote(path):
    _epath(path).write_bytes(data)
    return
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes atomically: a reader never sees half a file."""
  write_bytes(path, text.encode("utf-8"))


def append_text(path: str, text: str) -> None:
  if is_remote(path):
    write_text(path, (read_text(path) if exists(path) else "") + text)
  else:
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)


def copytree(src: str, dst: str) -> None:
  if not (is_remote(src) or is_remote(dst)):
    shutil.copytree(src, dst)
    return
  source = _epath(src)
  for directory, _, names in source.walk():
    relative = os.fspath(directory.relative_to(source)) if directory != source else ""
    makedirs(os.path.join(dst, relative))
    for name in names:
      write_bytes(os.path.join(dst, relative, name), read_bytes(os.fspath(directory / name)))


def save_figure(fig, path: str, **kwargs) -> None:
  """A matplotlib figure as a PNG at `path` (local or remote)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", **kwargs)
  write_bytes(path, buffer.getvalue())
