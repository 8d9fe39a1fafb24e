"""Physical length units: the one rule for turning a file's spacing unit into micrometres.

unetkit's spacing is in micrometres wherever the file names its length unit (OME-TIFF ``PhysicalSize*Unit``,
ImageJ's ``unit``, a TIFF resolution unit of centimetres, OME-Zarr axis units); a file that names no unit
gives its numbers as they are. Writers store spacing as micrometres (OME's default unit).
"""

from __future__ import annotations

_UM_PER: dict[str, float] = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "pm": 1e-6, "å": 1e-4,
    "km": 1e9, "in": 25400.0, "ft": 304800.0,
    "meter": 1e6, "decimeter": 1e5, "centimeter": 1e4, "millimeter": 1e3, "micrometer": 1.0, "micron": 1.0,
    "microns": 1.0, "nanometer": 1e-3, "picometer": 1e-6, "angstrom": 1e-4, "kilometer": 1e9,
    "inch": 25400.0, "foot": 304800.0,
}  # fmt: skip
"""Micrometres per unit: OME's UnitsLength symbols, NGFF's (UDUNITS-2) names and ImageJ's spellings."""

NGFF_UNIT = "micrometer"
"""The unit written on the spatial axes of OME-Zarr outputs (spacing is in micrometres)."""


def um_per_unit(unit: object) -> float | None:
    """Micrometres per ``unit``, or ``None`` for no unit, ``pixel`` or a unit that is not a length.

    Example:
        >>> um_per_unit("nm"), um_per_unit("micrometer"), um_per_unit("\\\\u00B5m"), um_per_unit("pixel")
        (0.001, 1.0, 1.0, None)
    """
    if not isinstance(unit, str):
        return None
    key = unit.strip().lower().replace("\\u00b5", "µ").replace("μ", "µ")  # ImageJ escapes µ; Greek mu
    return _UM_PER.get(key)
