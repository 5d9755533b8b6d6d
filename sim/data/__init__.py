"""Data files shipped with clustersim.sim (converted grid cases, resource presets) and the scripts that generated them."""
