"""The scheduler: graph order, hit or miss, resources granted before dispatch, identical tasks run
once, failure propagation and interrupts (scheduler.py), with the task locks, input checks and
output clearing around each command, and the run's records (history, bench figures)."""
