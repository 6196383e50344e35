"""Triton adapter for cross-encoder rerankers (bge-reranker-v2-m3 family): one score per pair."""

import triton_python_backend_utils as pb_utils

from bge_m3_client import contract
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.serving.cross import CrossEncoderService
from bge_m3_triton.serving.triton_glue import BatchExecutor, forward_gate, settings_from_args


class TritonPythonModel:
    """Cross-encoder scores for every request of a dynamic batch, in token-budget sub-batches."""

    def initialize(self, args):
        settings = settings_from_args(args)
        self.service = CrossEncoderService(CrossEncoder.load(settings), forward_gate(args, settings))
        self.executor = BatchExecutor(pb_utils, args["model_name"], {contract.SCORE: "FP32"}, settings.max_text_bytes)

    def execute(self, requests):
        return self.executor.execute(requests, self.service.parse, self.service.run)

    def finalize(self):
        self.service = None
