"""Naive baseline: FlagEmbedding's BGEM3FlagModel.encode once per request, fp32 on CPU."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from FlagEmbedding import BGEM3FlagModel


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.model = BGEM3FlagModel(params["model"]["string_value"], use_fp16=False, devices="cpu",
                                    passage_max_length=8192)

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = [t.decode() for t in pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)]
            out = self.model.encode(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
            ids = [np.array([int(k) for k in w], dtype=np.int32) for w in out["lexical_weights"]]
            values = [np.array(list(w.values()), dtype=np.float32) for w in out["lexical_weights"]]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("DENSE", out["dense_vecs"].astype(np.float32)),
                pb_utils.Tensor("SPARSE_INDICES", np.concatenate(ids)),
                pb_utils.Tensor("SPARSE_VALUES", np.concatenate(values)),
                pb_utils.Tensor("SPARSE_LENGTHS", np.array([len(i) for i in ids], dtype=np.int32)),
                pb_utils.Tensor("COLBERT", np.concatenate(out["colbert_vecs"]).astype(np.float32)),
                pb_utils.Tensor("COLBERT_LENGTHS", np.array([len(c) for c in out["colbert_vecs"]], dtype=np.int32)),
            ]))
        return responses
