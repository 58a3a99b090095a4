"""Paged-attention decode: KV block manager, CUDA kernels, float64 reference, and the bench pipeline.

`nxrun run bench:paged` builds the kernels, verifies them against the reference, benchmarks them against
the device's read bandwidth and contiguous-KV attention, and reports. Without a CUDA device the same
commands run the block manager and the NumPy backend on small shapes and label results `backend: cpu`.
"""
