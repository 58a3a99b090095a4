"""nxrun: an incremental, cached DAG task runner for GPU pipelines."""

__version__ = "0.1.0"
