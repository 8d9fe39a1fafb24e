"""Collection rules for the whole repository (the doctest run covers src/unetkit)."""

import importlib.util

# the napari widget module imports napari at import time (with a message naming the extra when it is missing)
collect_ignore_glob = [] if importlib.util.find_spec("napari") else ["src/unetkit/napari/_*widget.py"]
