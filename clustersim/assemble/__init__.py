"""Scenario → objects: the plant, the partition and clusters, the settings of controllers and
agents (:mod:`clustersim.assemble.build`), the run id, scenario fingerprint and message keys of
a run (:mod:`clustersim.assemble.identity`), and the one seeding rule
(:mod:`clustersim.assemble.seeds`)."""
