"""Partition stage: electrical distance, metrics, partition methods, pilot buses, constraints."""
