"""The `openvino` engine: the transformer run by OpenVINO's CPU plugin instead of torch.

Why (docs/decisions/012-openvino-engine.md): torch's CPU kernels stop the model well short of the
machine's matmul ceiling; OpenVINO's CPU plugin fuses attention and the work around the matmuls, runs
bf16 where the CPU has it (keeping layer norms in fp32), and takes static int8 quantized by NNCF. The
tokenizer, the sub-batching and BGE-M3's heads stay the model core's: only the encoder (or the
cross-encoder) changes hands, and it is called as the torch model is.

The checkpoint is converted once (`openvino.convert_model` from the loaded fp32 torch model; for int8,
then quantized by NNCF on calibration text shipped with the package) and the IR kept on disk, keyed by
the checkpoint's files, the precision and the OpenVINO and NNCF versions, beside the shared weight files
(`BGE_M3_SHARED_WEIGHTS_DIR`). A restart, or another instance, reads it back; OpenVINO maps the IR's
weights, so the instances share one copy in the page cache. Every file is checked against the digests
written beside it: a corrupt or partial IR is rebuilt, never trusted, and a stale one never matches a key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bge_m3_triton.core import shared_weights

LOG = logging.getLogger(__name__)
PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "int8": "bf16"}  # int8 weights and activations, the rest bf16
CALIBRATION_ROWS = 48  # texts NNCF observes to set the int8 ranges
# How NNCF quantizes (decision 012 compares them): the transformer model type (its ignored patterns, SmoothQuant
# for the activations' outliers) with mixed ranges (symmetric weights, asymmetric activations); the same without
# SmoothQuant; the same with the feed-forward output projections (GELU's long-tailed input) left unquantized;
# plain post-training quantization (symmetric, no model type); or int8 weights alone (activations stay bf16).
# Weights are per channel in all.
INT8_RECIPES = ("transformer", "transformer-no-smoothquant", "transformer-fp-ffn-out", "plain", "weights")
INT8_RECIPE = "transformer"  # the one served; perf/fidelity.py sets another to compare


def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass
class Output:
    """What the torch models return, as far as the model core reads it."""

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class OpenVINOModel:
    """A compiled OpenVINO model called like the transformers model it came from: `model(input_ids=...,
    attention_mask=..., return_dict=True)` answers `.last_hidden_state` (an encoder) or `.logits`."""

    engine_dtype = torch.float32  # what it outputs, whatever precision it computes in

    def __init__(self, compiled: Any, config: Any, output: str) -> None:
        self.compiled = compiled
        self.config = config
        self.output = output
        self._request = compiled.create_infer_request()  # one forward thread per instance calls it

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_dict: bool = True) -> Output:
        result = self._request.infer({"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        values = torch.from_numpy(np.asarray(result[self.compiled.outputs[0]], dtype=np.float32))
        return Output(**{self.output: values})

    def eval(self) -> OpenVINOModel:
        return self


class _Traceable(torch.nn.Module):
    """The model with plain tensor inputs and one tensor out, as conversion traces it."""

    def __init__(self, model: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return getattr(result, self.output)  # type: ignore[no-any-return]


def cache_key(files: Iterable[Path], precision: str, output: str) -> str:
    """A digest naming one IR: the checkpoint's files, the precision, what it outputs, and the versions of
    OpenVINO (and NNCF, for int8) that made it."""
    import openvino

    versions = [openvino.__version__]
    if precision == "int8":
        import nncf

        versions.append(nncf.__version__)
    recipe = f"{INT8_RECIPE}|{CALIBRATION_ROWS}" if precision == "int8" else ""
    return shared_weights.files_key(f"{precision}|{output}|{'|'.join(versions)}|{recipe}", files)


def cache_folder() -> Path:
    """Where IRs are kept: beside the shared weight files."""
    return shared_weights.default_folder() / "openvino"


def _digests(paths: Sequence[Path]) -> dict[str, str]:
    found = {}
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        found[path.name] = digest.hexdigest()
    return found


def _intact(xml: Path) -> bool:
    """Whether the IR at `xml` (and its .bin) is whole and what was written: its digests match."""
    manifest = xml.with_suffix(".json")
    files = [xml, xml.with_suffix(".bin")]
    if not manifest.is_file() or not all(f.is_file() for f in files):
        return False
    try:
        return bool(json.loads(manifest.read_text()) == _digests(files))
    except (OSError, ValueError):
        return False


def cached_ir(key: str, build: Callable[[], Any], folder: Path | None = None) -> Path:
    """The IR file for `key`: read back when it is intact, else built by `build()` (an OpenVINO model),
    saved and checked. Instances that load at once wait for the one that builds."""
    import openvino

    folder = cache_folder() if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / f"{key}.xml"
    with open(folder / f".{key}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _intact(xml):
            LOG.info("OpenVINO IR read back from %s", xml)
            return xml
        if xml.with_suffix(".json").exists() or xml.exists():
            LOG.warning("OpenVINO IR %s is damaged or partial: rebuilding it", xml)
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{key}."))
        try:
            openvino.save_model(build(), staging / xml.name, compress_to_fp16=False)
            for suffix in (".bin", ".xml"):  # the .xml last: its presence says the pair is there
                os.replace(staging / xml.with_suffix(suffix).name, xml.with_suffix(suffix))
            xml.with_suffix(".json").write_text(json.dumps(_digests([xml, xml.with_suffix(".bin")])))
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
        LOG.info("OpenVINO IR built in %.0f s: %s", time.monotonic() - started, xml)
    return xml


def convert(model: torch.nn.Module, output: str) -> Any:
    """The transformers model as an OpenVINO model with dynamic [batch, tokens] inputs."""
    import openvino

    example = {"input_ids": torch.tensor([[0, 100, 2], [0, 2, 1]]), "attention_mask": torch.tensor([[1, 1, 1],
                                                                                                      [1, 1, 0]])}
    shape = [("input_ids", openvino.PartialShape([-1, -1]), openvino.Type.i64),
             ("attention_mask", openvino.PartialShape([-1, -1]), openvino.Type.i64)]
    with torch.no_grad(), warnings_quiet():
        return openvino.convert_model(_Traceable(model.float().eval(), output), example_input=example, input=shape)


@contextlib.contextmanager
def warnings_quiet() -> Any:
    """Tracing warns about every data-dependent branch of the transformers code; they are known."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def calibration_texts() -> list[str]:
    """The calibration text shipped with the package: multilingual, short and long."""
    text = resources.files("bge_m3_triton").joinpath("assets/calibration.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def quantize(ov_model: Any, tokenizer: Any, max_tokens: int, recipe: str | None = None) -> Any:
    """Static int8 of the encoder by NNCF's post-training quantization on the calibration text (each text cut to
    512 tokens, or the model's `max_tokens` if fewer), by `recipe` (INT8_RECIPES; INT8_RECIPE when None)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    texts = calibration_texts()[:CALIBRATION_ROWS]
    items = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, max_length=min(512, max_tokens))
        ids = np.asarray([encoded["input_ids"]], dtype=np.int64)
        items.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    # NNCF draws progress bars on stdout, which a Triton Python stub opens as ASCII: a bullet there failed
    # the model's load. Its progress is kept off stdout, its log to warnings.
    nncf.set_log_level(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        recipe = recipe or INT8_RECIPE
        if recipe == "weights":
            return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        if recipe == "plain":
            return nncf.quantize(ov_model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                 subset_size=len(items))
        if recipe not in INT8_RECIPES:
            raise ValueError(f"unknown int8 recipe {recipe!r}: one of {', '.join(INT8_RECIPES)}")
        smoothing = AdvancedSmoothQuantParameters(matmul=-1) if recipe == "transformer-no-smoothquant" else None
        advanced = AdvancedQuantizationParameters(smooth_quant_alphas=smoothing) if smoothing else None
        ignored = nncf.IgnoredScope(patterns=[r".*layer\.\d+\.output\.dense/.*"], validate=False) \
            if recipe == "transformer-fp-ffn-out" else None
        return nncf.quantize(ov_model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                             preset=nncf.QuantizationPreset.MIXED, subset_size=len(items),
                             advanced_parameters=advanced, ignored_scope=ignored)


def compile_ir(xml: Path, precision: str, threads: int) -> Any:
    """The IR compiled for the CPU plugin: bf16 or f32 inference, latency-oriented, on `threads` threads."""
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return core.compile_model(core.read_model(xml), "CPU", config)


def load(files: Sequence[Path], precision: str, threads: int, output: str, torch_model: Callable[[], Any],
         tokenizer: Callable[[], Any], config: Any, max_tokens: int) -> OpenVINOModel:
    """The checkpoint as an `OpenVINOModel`: its IR read back, or converted (and quantized) now from
    `torch_model()` and kept for the next start."""
    def build() -> Any:
        converted = convert(torch_model(), output)
        return quantize(converted, tokenizer(), max_tokens) if precision == "int8" else converted

    xml = cached_ir(cache_key(files, "int8" if precision == "int8" else "float32", output), build)
    return OpenVINOModel(compile_ir(xml, precision, threads), config, output)
