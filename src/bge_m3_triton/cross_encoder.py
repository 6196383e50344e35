"""Cross-encoder rerankers (XLMRobertaForSequenceClassification, e.g. BAAI/bge-reranker-v2-m3).

Pairs are built as FlagEmbedding's `FlagReranker` builds them: query ids cut to the query max
length, passage ids to the max length, the pair re-tokenized with only the passage truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from bge_m3_triton import checkpoint, devices
from bge_m3_triton.batching import pad_batch, plan_sub_batches
from bge_m3_triton.settings import ModelSettings
from bge_m3_triton.tokens import load_tokenizer

LOG = logging.getLogger(__name__)


class CrossEncoder:
    """A loaded sequence-classification checkpoint with one label; `score` is the inference path."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, settings: ModelSettings) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.settings = settings
        config: Any = model.config
        pad = int(getattr(config, "pad_token_id", 1) or 1)
        self.max_positions = int(config.max_position_embeddings) - pad - 1
        self.pad_id = int(tokenizer.pad_token_id)

    @classmethod
    def load(cls, settings: ModelSettings) -> CrossEncoder:
        """Load the checkpoint named by `settings.model` onto `settings.device`."""
        from transformers import AutoModelForSequenceClassification

        folder = checkpoint.resolve_checkpoint(settings.model, settings.revision)
        checkpoint.encoder_weights_file(folder)
        device = devices.resolve_device("cpu" if settings.device == "auto" else settings.device)
        dtype = devices.resolve_dtype(settings.dtype, device)
        if device.type == "cpu":
            devices.configure_threads(settings.torch_threads)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
        except Exception as exc:
            raise checkpoint.CheckpointError(f"could not load the cross-encoder from {folder.name!r}: "
                                             f"{type(exc).__name__}: {exc}") from None
        if int(model.config.num_labels) != 1:
            raise checkpoint.CheckpointError(f"a reranker has one label; {folder.name!r} has {model.config.num_labels}")
        LOG.info("loaded cross-encoder %s on %s as %s", settings.model, device, dtype)
        return cls(model.to(device).eval(), load_tokenizer(folder), device, settings)

    def pair_ids(self, queries: Sequence[str], passages: Sequence[str], max_length: int,
                 query_max_length: int) -> list[list[int]]:
        """Token ids of each (query, passage) pair, truncated as the reference truncates them."""
        plain = {"add_special_tokens": False, "truncation": True, "return_attention_mask": False}
        query_ids = self.tokenizer(list(queries), max_length=query_max_length, **plain)["input_ids"]
        passage_ids = self.tokenizer(list(passages), max_length=max_length, **plain)["input_ids"]
        decode = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        first = [self.tokenizer.decode(ids, **decode) for ids in query_ids]
        second = [self.tokenizer.decode(ids, **decode) for ids in passage_ids]
        encoded = self.tokenizer(first, second, truncation="only_second", max_length=max_length,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return [list(ids[: self.max_positions]) for ids in encoded]

    @torch.inference_mode()
    def score(self, pair_ids: Sequence[list[int]], normalize: Sequence[bool]) -> list[float]:
        """The relevance logit of each pair (its sigmoid where `normalize`), in order."""
        scores = [0.0] * len(pair_ids)
        plan = plan_sub_batches([len(ids) for ids in pair_ids], self.settings.max_batch_tokens,
                                self.settings.max_batch_texts)
        for positions in plan:
            input_ids, mask = pad_batch([pair_ids[p] for p in positions], self.pad_id)
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                return_dict=True).logits.view(-1).double().cpu()
            sigmoids = torch.sigmoid(logits)
            for row, position in enumerate(positions):
                scores[position] = float(sigmoids[row] if normalize[position] else logits[row])
        return scores
