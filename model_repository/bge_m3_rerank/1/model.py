"""Triton adapter for BGE-M3's combined rerank score (dense + sparse + ColBERT).

Holds no weights: it embeds through the `bge_m3` model over BLS and scores here.
"""

import triton_python_backend_utils as pb_utils

from bge_m3_client import contract
from bge_m3_triton.serving.instance import settings_from_args
from bge_m3_triton.serving.rerank import RerankService
from bge_m3_triton.serving.triton_glue import BatchExecutor


class TritonPythonModel:
    """Scores of (query, passage) pairs for every request of a dynamic batch."""

    def initialize(self, args):
        settings = settings_from_args(args)
        self.service = RerankService(pb_utils, settings)
        self.executor = BatchExecutor(pb_utils, args["model_name"], {contract.SCORES: "FP32"},
                                      settings.max_text_bytes)

    async def execute(self, requests):
        return await self.executor.execute_async(requests, self.service.parse, self.service.run)

    def finalize(self):
        self.service = None
