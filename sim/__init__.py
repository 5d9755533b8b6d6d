"""Simulation layer: grid cases, resources, profiles, pandapower plant, batched power flow, KPIs."""
