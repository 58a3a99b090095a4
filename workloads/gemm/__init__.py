"""GEMM kernel ladder: FP32 SIMT kernels 01..10 and tensor-core kernels t1..t4, with bench, autotune and report."""
