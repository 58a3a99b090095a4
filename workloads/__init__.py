"""GPU kernels and their drivers: plain CLIs that nxrun tasks call."""
