"""The model core: BGE-M3 and cross-encoder inference in torch, with no Triton and no serving code."""
