"""The models this package ships, by name: `--checkpoint pretrained` on the CLI, `load_pretrained()` in Python.

Each release is a `save_release` safetensors file inside the package plus a JSON record (SHA-256, the commands
that made it, its held-out evaluation); loading checks the file against the recorded hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .models import SpikeViMFormer


@dataclass(frozen=True)
class Release:
    """A shipped model: its name, shape, the input size it was trained at, and its files in the package."""

    name: str
    variant: str
    image_size: int  # square input side in pixels it was trained at
    descriptor_dim: int
    file: str  # in spikevimformer/resources
    record: str  # JSON beside it: sha256, command, evaluation
    summary: str

    @property
    def path(self) -> Path:
        return Path(str(resources.files("spikevimformer") / "resources" / self.file))

    def info(self) -> dict[str, Any]:
        """The release record: SHA-256, the commands that trained it, its training log and held-out evaluation."""
        return json.loads((resources.files("spikevimformer") / "resources" / self.record).read_text())

    @property
    def sha256(self) -> str:
        return self.info()["sha256"]


RELEASES = {
    r.name: r
    for r in (
        Release("synth-pretrain-tiny", "tiny", 64, 240, "synth-pretrain-tiny.safetensors", "synth-pretrain-tiny.json",
                "SpikeViMFormer-T pretrained on four synthetic worlds (seeds 10000-10003), 64 px; "
                "a starting point for fine-tuning, not a University-1652 model"),  # fmt: skip
    )
}
ALIASES = {"pretrained": "synth-pretrain-tiny"}  # the name the README and the demo use


def release_names() -> list[str]:
    """Every name `--checkpoint` and `load_pretrained` accept, aliases first."""
    return [*ALIASES, *RELEASES]


def find_release(name: str) -> Release | None:
    """The release called `name` (or an alias of it), else None."""
    return RELEASES.get(ALIASES.get(name, name))


def get_release(name: str) -> Release:
    """Like find_release, but an unknown name raises ValueError listing the known ones."""
    release = find_release(name)
    if release is None:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(release_names())} "
                         "(or give a checkpoint file)")  # fmt: skip
    return release


def load_pretrained(name: str = "pretrained") -> SpikeViMFormer:
    """The shipped model called `name`, in eval mode, with `model.image_size` set to the size it was trained at.

    Preprocess inputs with `spikevimformer.preprocess(image, model.image_size)`. Raises ValueError for an
    unknown name and CheckpointError when the file differs from its recorded SHA-256.
    """
    from .checkpoint import load_release

    release = get_release(name)
    model = load_release(release.path, sha256=release.sha256)
    model.image_size = release.image_size
    return model.eval()
