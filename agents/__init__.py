"""Cluster and central agents: volt/var problem, optimizers, controllers, local fallback."""
