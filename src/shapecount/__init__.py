"""shapecount: multitask learning (135-way classification + 6 counts) on the GSN shapes dataset."""

import os
import time

__version__ = "0.1.0"

# When the package was first imported: the origin of `startup_s` (time to the first training step) in a run's
# metrics.json. Python's own start (~0.03 s) comes before it; `shapecount bench` measures from process start.
IMPORT_TIME = time.time()

# Threads waiting at an OpenMP barrier spin 10,000 times before they sleep, instead of libgomp's 300,000: on a
# 2-core machine where anything else runs, a spinning thread holds the core its descheduled partner needs, and
# every parallel region stalls. Measured with `shapecount bench --contention` (docs/performance.md): beside one
# busy process, training keeps a third to a half of its quiet speed instead of a quarter to a third, for 10-20%
# less when quiet. Where other processes are busy when training starts, the command line also trains with fewer
# threads (cli._threads_beside_others), which keeps more.
# libgomp reads the setting once, when torch loads it: this applies when shapecount is imported before torch
# (the command line always is), and never overrides a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT.
SPINCOUNT = "10000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
