"""Triton adapter for the BGE-M3 embed model: dense, sparse and ColBERT outputs from one forward pass.

Thin by design: settings from config.pbtxt parameters (environment overrides only on request),
the model core from `bge_m3_triton`, continuous batching and per-request errors from `Collector`.
"""

import triton_python_backend_utils as pb_utils

from bge_m3_client import contract
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.serving.collector import Collector
from bge_m3_triton.serving.embed import EmbedService
from bge_m3_triton.serving.instance import load_model, settings_from_args


class TritonPythonModel:
    """BGE-M3 embeddings for every queued request, in token-budget sub-batches, on a forward thread."""

    def initialize(self, args):
        settings = settings_from_args(args)
        self.service = EmbedService(load_model(args, settings, M3Model))
        self.collector = Collector.for_model(pb_utils, args, settings, self.service, contract.EMBED_OUTPUTS)

    def execute(self, requests):
        return self.collector.execute(requests)

    def finalize(self):
        self.collector.close()
