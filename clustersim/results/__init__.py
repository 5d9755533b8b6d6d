"""A run's or an experiment's results folder: tables, figures drawn from them, and the
self-contained ``report.html``."""
