"""Offline text: the running interpreter's standard-library source as a byte corpus.

``sysconfig.get_paths()["stdlib"]`` points at the base interpreter's library also inside a virtual
environment, so the corpus needs no download. Files are read in sorted path order, skipping test folders
and installed packages, until ``num_bytes`` are collected; the last ``val_fraction`` of the bytes is the
validation split. The corpus differs between Python versions, not between runs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig

import numpy as np

_SKIPPED_FOLDERS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


@dataclasses.dataclass(frozen=True)
class TextCorpus:
  """Train and validation bytes (``uint8`` arrays) and where they came from."""

  train: np.ndarray
  val: np.ndarray
  source: str
  num_files: int

  def batch(self, rng: np.random.Generator, batch_size: int, seq_len: int, split: str = "train"):
    """Random windows ``(inputs, targets)`` of shape ``(batch_size, seq_len)``, targets shifted by one."""
    data = {"train": self.train, "val": self.val}[split]
    if len(data) <= seq_len + 1:
      raise ValueError(f"`seq_len` must be below the {split} split's {len(data) - 1} bytes, got {seq_len}.")
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
    windows = np.stack([data[s : s + seq_len + 1] for s in starts]).astype(np.int32)
    return windows[:, :-1], windows[:, 1:]


def stdlib_files(root: str | None = None) -> list[pathlib.Path]:
  """The ``.py`` files under ``root`` (default: the stdlib), in sorted order, without test folders."""
  base = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  found = []
  for folder, subfolders, names in os.walk(base):
    subfolders[:] = [s for s in subfolders if s not in _SKIPPED_FOLDERS]  # prune before descending
    found.extend(pathlib.Path(folder, n) for n in names if n.endswith(".py"))
  return sorted(found, key=lambda p: p.relative_to(base).as_posix())


def load_stdlib_corpus(num_bytes: int = 2_000_000, val_fraction: float = 0.1, root: str | None = None
                       ) -> TextCorpus:
  """The first ``num_bytes`` bytes of the stdlib's source, split into train and validation.

  Args:
    num_bytes: size of the slice (the stdlib holds about 12 MB without tests).
    val_fraction: share of the slice, taken from its end, used for validation.
    root: folder to read instead of the stdlib.

  Returns:
    A :class:`TextCorpus`.
  """
  if num_bytes < 1000:
    raise ValueError(f"`num_bytes` must be at least 1000, got {num_bytes}.")
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction}.")
  chunks, total, used = [], 0, 0
  for used, path in enumerate(stdlib_files(root), start=1):
    chunks.append(path.read_bytes())
    total += len(chunks[-1])
    if total >= num_bytes:
      break
  data = np.frombuffer(b"".join(chunks)[:num_bytes], dtype=np.uint8)
  if len(data) < num_bytes:
    raise ValueError(f"`num_bytes` must be at most the {len(data)} bytes found under {root!r}, got {num_bytes}.")
  split = int(len(data) * (1.0 - val_fraction))
  source = root or sysconfig.get_paths()["stdlib"]
  return TextCorpus(train=data[:split], val=data[split:], source=str(source), num_files=used)
