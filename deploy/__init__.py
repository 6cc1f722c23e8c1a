"""What a model is once stored and deployed: packed forms, ONNX export, runtimes, counting and latency.

Below methods and harness; imports only `slimbench.core`.
"""
