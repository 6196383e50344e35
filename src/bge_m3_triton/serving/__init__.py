"""What the Triton `model.py` adapters share: request parsing, batch execution, responses."""
