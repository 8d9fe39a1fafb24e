"""Training targets derived from instance labels, so a semantic network can separate touching objects.

``boundary`` (the default for instance masks): three classes, 0 background, 1 object interior, 2 object
boundary (the object's own pixels that touch another label, background included). Touching objects are
then split by a boundary line the network learns to draw; :func:`unetkit.postprocess.instances.
separate_instances` with ``method="boundary"`` turns a prediction back into instances (seeded watershed from
the interior's connected components). Chosen over a distance-map regression because it keeps the model a
plain classifier (same loss, tiler, metrics, export) and the seeds are exactly the interiors.
"""

from __future__ import annotations

import numpy as np

TARGETS = ("classes", "boundary")
BOUNDARY_CLASS_NAMES = ["background", "interior", "boundary"]


def boundary_classes(instances: np.ndarray) -> np.ndarray:
    """Background 0, interior 1, boundary 2 from an instance label image (0 = background).

    A pixel is boundary when a face neighbour carries another label (another object or background).

    Shape:
        ``(*S)`` -> ``int64 (*S)``

    >>> lab = np.zeros((5, 8), int); lab[1:4, 1:4] = 1; lab[1:4, 4:7] = 2
    >>> boundary_classes(lab)
    array([[0, 0, 0, 0, 0, 0, 0, 0],
           [0, 2, 2, 2, 2, 2, 2, 0],
           [0, 2, 1, 2, 2, 1, 2, 0],
           [0, 2, 2, 2, 2, 2, 2, 0],
           [0, 0, 0, 0, 0, 0, 0, 0]])
    """
    lab = np.asarray(instances)
    edge = np.zeros(lab.shape, bool)
    for ax in range(lab.ndim):
        a = np.moveaxis(lab, ax, 0)
        e = np.moveaxis(edge, ax, 0)
        differ = a[1:] != a[:-1]
        e[1:] |= differ
        e[:-1] |= differ
    out = np.zeros(lab.shape, np.int64)
    fg = lab > 0
    out[fg] = 1
    out[fg & edge] = 2
    return out
