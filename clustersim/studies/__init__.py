"""Experiments of many runs: ``compare``, ``sweep``, ``reproduce`` and the job runner they share."""
