"""Scenario → objects: the plant, the partition and clusters, the settings of controllers and
agents, the run id (:mod:`clustersim.assemble.build`), and the one seeding rule
(:mod:`clustersim.assemble.seeds`)."""
