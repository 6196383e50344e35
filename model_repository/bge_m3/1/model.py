"""Triton adapter for the BGE-M3 embed model: dense, sparse and ColBERT outputs from one forward pass.

Thin by design: settings from config.pbtxt parameters (environment overrides only on request),
the model core from `bge_m3_triton`, per-request errors from `BatchExecutor`.
"""

import triton_python_backend_utils as pb_utils

from bge_m3_client import contract
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.serving.embed import EmbedService
from bge_m3_triton.serving.triton_glue import BatchExecutor, forward_gate, settings_from_args


class TritonPythonModel:
    """BGE-M3 embeddings for every request of a dynamic batch, in token-budget sub-batches."""

    def initialize(self, args):
        settings = settings_from_args(args)
        self.service = EmbedService(M3Model.load(settings), forward_gate(args, settings))
        self.executor = BatchExecutor(pb_utils, args["model_name"], contract.EMBED_OUTPUTS, settings.max_text_bytes)

    def execute(self, requests):
        return self.executor.execute(requests, self.service.parse, self.service.run)

    def finalize(self):
        self.service = None
