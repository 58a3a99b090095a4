"""Tests of the test harness itself: what CI requires, and how helpers find their programs."""
