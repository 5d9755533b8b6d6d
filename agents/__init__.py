"""Cluster and central agents (issue 4)."""
