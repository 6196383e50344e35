"""Cross-encoder rerankers (XLMRobertaForSequenceClassification, e.g. BAAI/bge-reranker-v2-m3).

Pairs are built as FlagEmbedding's `FlagReranker` builds them: query ids cut to the query max
length, passage ids to the max length, the pair re-tokenized with only the passage truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from bge_m3_triton.core.batching import Interrupt, pad_batch, plan_sub_batches
from bge_m3_triton.core.checkpoint import CheckpointError
from bge_m3_triton.core.loading import load_pretrained, position_limit
from bge_m3_triton.core.plan import RuntimePlan
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.core.tokens import load_tokenizer

LOG = logging.getLogger(__name__)


class CrossEncoder:
    """A loaded sequence-classification checkpoint with one label; `score` is the inference path."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, settings: ModelSettings) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.settings = settings
        config: Any = model.config
        self.max_positions = position_limit(config)
        self.pad_id = int(tokenizer.pad_token_id)
        self.interrupt = Interrupt()  # set from another thread: forward passes stop at their next sub-batch

    @classmethod
    def load(cls, settings: ModelSettings, runtime_plan: RuntimePlan | None = None) -> CrossEncoder:
        """Load the checkpoint named by `settings.model` as the runtime plan says (core.plan)."""
        from transformers import AutoModelForSequenceClassification

        loaded = load_pretrained(settings, AutoModelForSequenceClassification, "cross-encoder",
                                 runtime_plan=runtime_plan)
        labels = int(loaded.model.config.num_labels)
        if labels != 1:
            raise CheckpointError(f"a reranker has one label; {loaded.folder.name!r} has {labels}")
        return cls(loaded.model, load_tokenizer(loaded.folder), loaded.device, loaded.settings)

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
            self.interrupt.check()
            input_ids, mask = pad_batch([pair_ids[p] for p in positions], self.pad_id)
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                return_dict=True).logits.view(-1).double().cpu()
            sigmoids = torch.sigmoid(logits)
            for row, position in enumerate(positions):
                scores[position] = float(sigmoids[row] if normalize[position] else logits[row])
        return scores
