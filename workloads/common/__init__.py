"""Shared harness for GPU workloads: device facts, cubin builds, timing, verification, results and plots.

Every module imports CuPy lazily, inside the functions that need a device, so that importing the harness
costs nothing on a machine without a GPU.
"""
