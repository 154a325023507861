"""The embedded model zoo: small GPT-2 checkpoints whose answers we know.

- ``tiny``: trained by us on a seeded synthetic corpus (``corpus.py``, ``train.py``); its ground
  truth is what measurements on the shipped weights establish (``measure.py``).
- ``induction``, ``ioi``, ``ioi_backup`` (backup name mover, suppression head, look-alike decoys)
  and ``illusion`` (an interchange illusion): compiled by hand (``compiled.py``); their circuits
  are known by construction.

Each model lives in ``models/<name>/`` as an ordinary Hugging Face directory (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) plus ``ground_truth.json``:
the mechanism, the prompts that probe it, the components that implement it, and the measured
figures with the command that measures them.
"""

from __future__ import annotations

import json
from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT = "tiny"


def available() -> list[str]:
    """Names of the shipped models (those with weights on disk)."""
    return sorted(
        p.name for p in MODELS_DIR.iterdir() if p.is_dir() and (p / "config.json").exists()
    )


def path(name: str = DEFAULT) -> Path:
    """Directory of a shipped model; accepts ``"tiny"`` or ``"zoo:tiny"``."""
    name = name.removeprefix("zoo:")
    p = MODELS_DIR / name
    if not (p / "config.json").exists():
        raise ValueError(
            f"unknown zoo model {name!r}; the zoo ships {available()}. "
            "Load one with mi_widgets.load('zoo:<name>')."
        )
    if not (p / "model.safetensors").exists():
        raise FileNotFoundError(
            f"zoo model {name!r} has no weights at {p / 'model.safetensors'}; "
            "rebuild them with `make model` (trained) or `python -m mi_widgets.zoo.compiled` (compiled)."
        )
    return p


def ground_truth(name: str = DEFAULT) -> dict:
    """The ground-truth record of a shipped model (see the module docstring)."""
    with open(path(name) / "ground_truth.json", encoding="utf-8") as f:
        return json.load(f)
