"""The BGE-M3 model core: one forward pass yields dense, sparse and ColBERT outputs.

Matches FlagEmbedding's `BGEM3FlagModel` numerically (CLS dense L2-normalized; sparse
`relu(sparse_linear(h))` max-pooled per token id without `<s> </s> <pad> <unk>`; ColBERT
`colbert_linear(h[:, 1:])` L2-normalized, one vector per real token after `<s>`), with a leaner
path: converted weights (bf16 on capable hardware), SDPA attention, length-sorted sub-batches under
a token budget, and vectorized post-processing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bge_m3_triton.core import checkpoint
from bge_m3_triton.core.batching import Interrupt, pad_batch, plan_sub_batches
from bge_m3_triton.core.loading import load_pretrained, position_limit
from bge_m3_triton.core.plan import RuntimePlan
from bge_m3_triton.core.postprocess import colbert_vectors, sparse_weights
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.core.tokens import Tokenized, load_tokenizer, tokenize

LOG = logging.getLogger(__name__)
OUTPUTS = ("dense", "sparse", "colbert")


@dataclasses.dataclass
class TextEmbedding:
    """What one text yields; absent outputs are None. Arrays are float32 / int64 numpy."""

    tokens: int
    truncated: bool
    dense: np.ndarray | None = None
    sparse_ids: np.ndarray | None = None
    sparse_weights: np.ndarray | None = None
    colbert: np.ndarray | None = None


class M3Model:
    """A loaded BGE-M3 checkpoint on one device; `encode` is the whole inference path."""

    def __init__(self, encoder: torch.nn.Module, colbert_head: torch.nn.Linear, sparse_head: torch.nn.Linear,
                 tokenizer: object, device: torch.device, settings: ModelSettings) -> None:
        self.encoder = encoder
        self.colbert_head = colbert_head
        self.sparse_head = sparse_head
        self.tokenizer = tokenizer
        self.device = device
        self.settings = settings
        config: Any = encoder.config
        self.vocab_size = int(config.vocab_size)
        self.hidden_size = int(config.hidden_size)
        self.colbert_dim = int(colbert_head.out_features)
        self.max_positions = position_limit(config)
        self.pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
        self.unused_ids = sorted({int(tokenizer.cls_token_id), int(tokenizer.eos_token_id),  # type: ignore[attr-defined]
                                  self.pad_id, int(tokenizer.unk_token_id)})  # type: ignore[attr-defined]
        self.interrupt = Interrupt()  # set from another thread: forward passes stop at their next sub-batch

    @classmethod
    def load(cls, settings: ModelSettings, runtime_plan: RuntimePlan | None = None) -> M3Model:
        """Load encoder, both heads and tokenizer from `settings.model` as the runtime plan says (core.plan;
        the plan for `settings` on this machine when none is given)."""
        from transformers import AutoModel

        loaded = load_pretrained(settings, AutoModel, "encoder", required=checkpoint.M3_HEADS,
                                 runtime_plan=runtime_plan)
        folder, encoder, device = loaded.folder, loaded.model, loaded.device
        hidden = int(encoder.config.hidden_size)
        # The sparse head runs in fp32 on the encoder's output, which keeps its weights (small values
        # near the ReLU's zero) much closer to fp32 under bf16. The ColBERT head (1.3% of the 6-layer
        # model's FLOPs, but 2.6% of its time at fp32's rate) runs in the encoder's dtype: in bf16 its
        # vectors moved by under 1e-5 in cosine on a trained encoder (perf/results/fidelity-e5-*.md).
        colbert_head = checkpoint.load_linear_head(folder / "colbert_linear.pt", hidden, loaded.dtype, device)
        sparse_head = checkpoint.load_linear_head(folder / "sparse_linear.pt", hidden, torch.float32, device)
        if sparse_head.out_features != 1:
            raise checkpoint.CheckpointError("sparse_linear.pt must project to one weight per token")
        return cls(encoder, colbert_head, sparse_head, load_tokenizer(folder), device, loaded.settings)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights run in."""
        engine_dtype = getattr(self.encoder, "engine_dtype", None)  # OpenVINO: its output's, fp32
        return engine_dtype or next(self.encoder.parameters()).dtype

    def tokenize(self, texts: Sequence[str], max_lengths: Sequence[int], spans: bool = False) -> Tokenized:
        """Token ids per text, each truncated to its own max length (capped at the model's positions);
        with `spans`, each token's character offsets too."""
        capped = [min(length, self.max_positions) for length in max_lengths]
        return tokenize(self.tokenizer, texts, capped, spans)

    def encode(self, texts: Sequence[str], max_lengths: Sequence[int],
               outputs: Sequence[str] = OUTPUTS) -> list[TextEmbedding]:
        """Embed `texts` (each with its own max length) and return one result per text, in order."""
        return self.encode_tokenized(self.tokenize(texts, max_lengths), outputs)

    @torch.inference_mode()
    def encode_tokenized(self, tokenized: Tokenized, outputs: Sequence[str] = OUTPUTS) -> list[TextEmbedding]:
        """Run the forward passes for already tokenized texts, in token-budget sub-batches."""
        results = [TextEmbedding(tokens=len(ids), truncated=cut)
                   for ids, cut in zip(tokenized.ids, tokenized.truncated)]
        wanted = [name for name in OUTPUTS if name in outputs]
        if not wanted or not results:
            return results
        plan = plan_sub_batches([len(ids) for ids in tokenized.ids], self.settings.max_batch_tokens,
                                self.settings.max_batch_texts)
        for positions in plan:
            self.interrupt.check()
            self._run_sub_batch([tokenized.ids[p] for p in positions], [results[p] for p in positions], wanted)
        return results

    def _run_sub_batch(self, rows: list[list[int]], results: list[TextEmbedding], wanted: list[str]) -> None:
        input_ids, attention_mask = pad_batch(rows, self.pad_id)
        hidden = self.encoder(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                              return_dict=True).last_hidden_state  # in the encoder's dtype, as the ColBERT head
        if "dense" in wanted:
            dense = torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1).cpu().numpy()
            for index, result in enumerate(results):
                result.dense = dense[index]
        if "sparse" in wanted:
            weights = torch.relu(self.sparse_head(hidden.float())).squeeze(-1).cpu()
            counts, ids, values = sparse_weights(weights, input_ids, attention_mask, self.unused_ids, self.vocab_size)
            self._scatter_rows(results, counts, ids.numpy(), "sparse_ids")
            self._scatter_rows(results, counts, values.numpy(), "sparse_weights")
        if "colbert" in wanted:
            projected = self.colbert_head(hidden[:, 1:]).cpu()
            counts, vectors = colbert_vectors(projected, attention_mask)
            self._scatter_rows(results, counts, vectors.numpy(), "colbert")

    @staticmethod
    def _scatter_rows(results: list[TextEmbedding], counts: torch.Tensor, flat: np.ndarray, field: str) -> None:
        start = 0
        for result, count in zip(results, counts.tolist()):
            setattr(result, field, flat[start:start + count])
            start += count
