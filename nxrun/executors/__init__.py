"""Executors: how a cache miss's command runs. The local executor starts each command as a process
group of its own (task_process.py) watched by a process that outlives nxrun (task_watchdog.py)."""
