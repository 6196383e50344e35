"""Triton adapter for cross-encoder rerankers (bge-reranker-v2-m3 family): one score per pair.

Thin by design: settings from config.pbtxt, the model core from `bge_m3_triton`, continuous batching
and per-request errors from `Collector`.
"""

import triton_python_backend_utils as pb_utils

from bge_m3_client import contract
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.serving.collector import Collector
from bge_m3_triton.serving.cross import CrossEncoderService
from bge_m3_triton.serving.instance import load_model, settings_from_args


class TritonPythonModel:
    """Cross-encoder scores for every queued request, in token-budget sub-batches, on a forward thread."""

    def initialize(self, args):
        settings = settings_from_args(args)
        self.service = CrossEncoderService(load_model(args, settings, CrossEncoder))
        self.collector = Collector.for_model(pb_utils, args, settings, self.service, {contract.SCORE: "FP32"})

    def execute(self, requests):
        return self.collector.execute(requests)

    def finalize(self):
        self.collector.close()
