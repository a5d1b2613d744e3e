"""shapecount: multitask learning (135-way classification + 6 counts) on the GSN shapes dataset."""

import time

__version__ = "0.1.0"

# When the package was first imported: the origin of `startup_s` (time to the first training step) in a run's
# metrics.json. Python's own start (~0.03 s) comes before it; `shapecount bench` measures from process start.
IMPORT_TIME = time.time()
