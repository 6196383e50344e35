"""Finding a checkpoint (local folder or Hugging Face hub id) and loading its files safely.

Nothing here unpickles arbitrary objects: weights come from safetensors, or from `torch.load`
with `weights_only=True`, which refuses any pickle that would run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
M3_HEADS = ("colbert_linear.pt", "sparse_linear.pt")
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.pt", "*.model", "*.txt"]


class CheckpointError(RuntimeError):
    """The checkpoint is missing, incomplete or unreadable; the message says which file and why."""


def resolve_checkpoint(model: str, revision: str = "", required: tuple[str, ...] = ()) -> Path:
    """Return a local folder for `model`: the folder itself, or a hub snapshot downloaded (or cached).

    `required` names files that must be present; a missing one is an error naming it.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path
    elif path.exists() or model.startswith((".", "/", "~")):
        raise CheckpointError(f"model folder {model!r} does not exist or is not a folder")
    else:
        folder = _download(model, revision)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"checkpoint {model!r} has no config.json")
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {model!r} is missing {', '.join(missing)}")
    return folder


def _download(repo_id: str, revision: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision or None,
                                      allow_patterns=_DOWNLOAD_PATTERNS))
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise CheckpointError(
            f"could not get {repo_id!r} from the Hugging Face hub{offline}: {type(exc).__name__}. "
            "Download it elsewhere and point the model at the local folder (--model ./folder, "
            "or the 'model' parameter in config.pbtxt)."
        ) from None


def encoder_weights_file(folder: Path) -> Path:
    """The encoder's weights file: safetensors preferred; a missing one is an error naming both."""
    for name in ENCODER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"checkpoint {folder.name!r} has neither {' nor '.join(ENCODER_WEIGHTS)}")


def load_linear_head(file: Path, in_features: int, dtype: torch.dtype, device: torch.device) -> torch.nn.Linear:
    """Load a `torch.nn.Linear` state dict (BGE-M3's colbert/sparse heads) without running pickled code."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file.name} is not a readable weights-only state dict: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or "weight" not in state or not isinstance(state["weight"], torch.Tensor):
        raise CheckpointError(f"{file.name} does not hold a linear layer's state dict (no 'weight' tensor)")
    weight = state["weight"]
    if weight.ndim != 2 or weight.shape[1] != in_features:
        raise CheckpointError(f"{file.name} has weight shape {tuple(weight.shape)}; expected (*, {in_features})")
    layer = torch.nn.Linear(in_features, weight.shape[0], bias="bias" in state)
    try:
        layer.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{file.name} does not fit a linear layer: {exc}") from None
    return layer.to(device=device, dtype=dtype).eval()
