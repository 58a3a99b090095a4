"""Serving benchmark: request traces, KV-memory policy replay and reports (PagedAttention, SOSP 2023)."""
