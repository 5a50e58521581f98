"""Prefect tasks: thin adapters over the ooc library (paths, sources, configs in; typed
results out)."""

import logging

# Dask cannot size some of Prefect's task results (a warning per result); the sizes only
# steer Dask's memory accounting, so the warnings are noise in a run's log.
logging.getLogger("distributed.sizeof").setLevel(logging.ERROR)
