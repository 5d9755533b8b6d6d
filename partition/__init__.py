"""Partition stage (issue 3)."""
