"""Class names and colours, in one place: the default names, the palette, parsing what users give.

Class 0 is the background: overlays leave it uncoloured and mean scores leave it out by default. A class
list names *every* class, class 0 first, so ISBI 2012's two classes are ``membrane,cell``.

Users give classes as text (``unetkit train --classes``) or as a config list (``data.classes``):

- ``"membrane,cell"``: names only; the colours come from the masks (colour masks) or the palette;
- ``"membrane:#ff0000,cell:0,255,0"``: a colour after ``:`` as ``#rrggbb`` or ``r,g,b``;
- ``["membrane", {"name": "cell", "colour": [0, 255, 0]}]``: the config form.

This module is low-level on purpose: it imports nothing of unetkit but its errors, and no torch.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unetkit.errors import ConfigError

__all__ = [
    "RGB",
    "ClassSpec",
    "Classes",
    "default_class_names",
    "format_colour",
    "palette",
    "parse_classes",
    "parse_colour",
    "pinned_num_classes",
]

RGB = tuple[int, int, int]

# Background first, then Kenneth Kelly's (1965) sequence of colours of maximum contrast, white left out.
_KELLY: tuple[RGB, ...] = (
    (0, 0, 0), (255, 179, 0), (128, 62, 117), (255, 104, 0), (166, 189, 215), (193, 0, 32),
    (206, 162, 98), (129, 112, 102), (0, 125, 52), (246, 118, 142), (0, 83, 138), (255, 122, 92),
    (83, 55, 122), (255, 142, 0), (179, 40, 81), (244, 200, 0), (127, 24, 13), (147, 170, 0),
    (89, 51, 21), (241, 58, 19), (35, 44, 22),
)  # fmt: skip


def palette(n: int) -> list[RGB]:
    """``n`` RGB colours: black for class 0, then Kelly's contrasting colours, then golden-angle hues.

    The order is stable: class ``k`` always gets the same colour, whatever ``n`` is.

    >>> palette(3)
    [(0, 0, 0), (255, 179, 0), (128, 62, 117)]
    """
    colours = list(_KELLY[:n])
    k = 0
    while len(colours) < n:
        h = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85 if k % 2 else 0.65, 0.95 if k % 3 else 0.75)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
        k += 1
    return colours


def default_class_names(num_classes: int) -> list[str]:
    """``background, foreground`` for 2 classes, else ``background, class_1, class_2, ...``.

    A single-logit (sigmoid) network has one output, the foreground: ``["foreground"]``.

    >>> default_class_names(2), default_class_names(3)
    (['background', 'foreground'], ['background', 'class_1', 'class_2'])
    """
    if num_classes == 1:
        return ["foreground"]
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background", *(f"class_{i}" for i in range(1, num_classes))]


def _default_colours(num_classes: int) -> list[RGB]:
    return palette(2)[1:] if num_classes == 1 else palette(num_classes)


_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


def parse_colour(value: Any, where: str = "colour") -> RGB:
    """A colour from ``"#rrggbb"``, ``"r,g,b"`` or a sequence of three 0..255 integers.

    >>> parse_colour("#ff8000"), parse_colour("0,255,0"), parse_colour([1, 2, 3])
    ((255, 128, 0), (0, 255, 0), (1, 2, 3))
    """
    parts: Sequence[Any]
    if isinstance(value, str):
        text = value.strip()
        m = _HEX.fullmatch(text)
        if m:
            h = m.group(1)
            return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
        parts = [p.strip() for p in text.split(",")]
    elif isinstance(value, Sequence):
        parts = value
    else:
        parts = []
    try:
        rgb = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ConfigError(f"{where}: {value!r} is not a colour; give #rrggbb or r,g,b with values 0..255")
    return rgb  # type: ignore[return-value]


def format_colour(colour: Sequence[int]) -> str:
    """``#rrggbb`` of an RGB triple.

    >>> format_colour((255, 0, 16))
    '#ff0010'
    """
    return "#" + "".join(f"{int(c):02x}" for c in colour)


@dataclass(frozen=True)
class ClassSpec:
    """One class as a user gives it: a name and, optionally, a colour."""

    name: str
    colour: RGB | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "colour": list(self.colour) if self.colour is not None else None}


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: a class name must be a non-empty text, not {name!r}")
    name = name.strip()
    if any(c in name for c in ",:"):
        raise ConfigError(f"{where}: class name {name!r} holds ',' or ':'; those separate names and colours")
    return name


def parse_classes(value: Any, where: str = "--classes") -> list[ClassSpec]:
    """User class names (and colours), class 0 first, as :class:`ClassSpec` s.

    Accepts ``"membrane,cell"``, ``"membrane:#ff0000,cell:0,255,0"``, or a list whose items are names,
    ``"name:colour"`` texts, ``{"name": ..., "colour": ...}`` mappings or :class:`ClassSpec` s.

    Raises:
        ConfigError: a bad name or colour, a repeated name, or an empty list (the message names ``where``).

    >>> [(c.name, c.colour) for c in parse_classes("membrane:#ff0000,cell:0,255,0,bg")]
    [('membrane', (255, 0, 0)), ('cell', (0, 255, 0)), ('bg', None)]
    """
    items: list[Any]
    if isinstance(value, str):
        items = _split_text(value)
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ConfigError(f"{where}: expected names like 'membrane,cell' or a list, not {value!r}")
    specs: list[ClassSpec] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, ClassSpec):
            spec = ClassSpec(_check_name(item.name, at), item.colour)
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "colour", "color"}
            if unknown:
                raise ConfigError(f"{at}: unknown key(s) {sorted(unknown)}; a class has 'name' and 'colour'")
            colour = item.get("colour", item.get("color"))
            spec = ClassSpec(_check_name(item.get("name"), at), parse_colour(colour, at) if colour else None)
        elif isinstance(item, str):
            name, _, colour = item.partition(":")
            spec = ClassSpec(_check_name(name, at), parse_colour(colour, at) if colour.strip() else None)
        else:
            raise ConfigError(f"{at}: expected a name or {{name, colour}}, not {item!r}")
        specs.append(spec)
    if not specs:
        raise ConfigError(f"{where}: no class names given")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{where}: class name(s) {repeated} given twice; every class needs its own name")
    return specs


def _split_text(text: str) -> list[str]:
    """Split ``"a:#ff0000,b:0,255,0,c"`` into ``["a:#ff0000", "b:0,255,0", "c"]`` (an ``r,g,b`` keeps its commas)."""
    items: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if items and part.isdigit() and _open_rgb(items[-1]):
            items[-1] += "," + part
        elif part:
            items.append(part)
    return items


def _open_rgb(item: str) -> bool:
    """True while ``item``'s colour is an ``r,g,b`` with fewer than three numbers."""
    _, sep, colour = item.partition(":")
    parts = colour.split(",")
    return bool(sep) and len(parts) < 3 and all(p.strip().isdigit() for p in parts)


def pinned_num_classes(num_classes: int | None, specs: Sequence[ClassSpec] | None) -> int | None:
    """The pinned number of classes: ``num_classes``, or the number of named classes (they must agree).

    >>> pinned_num_classes(None, parse_classes("membrane,cell")), pinned_num_classes(3, None)
    (2, 3)
    """
    if specs is None:
        return num_classes
    if num_classes is not None and num_classes != len(specs):
        raise ConfigError(
            f"{len(specs)} class names ({', '.join(s.name for s in specs)}) but num_classes={num_classes}; "
            "give one name per class, class 0 first, or leave num_classes out"
        )
    return len(specs)


@dataclass(frozen=True)
class Classes:
    """The resolved classes of a model or dataset: one name and one colour per class, class 0 first.

    Build it with :meth:`resolve`, which applies the one rule: a colour the user gave wins, then the
    masks' own colour (colour masks), then the palette; names are the user's or :func:`default_class_names`.
    """

    names: tuple[str, ...]
    colours: tuple[RGB, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colours):
            raise ConfigError(f"{len(self.names)} class names but {len(self.colours)} colours")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def default(cls, num_classes: int) -> Classes:
        """Default names and palette colours for ``num_classes`` classes.

        >>> Classes.default(2).names
        ('background', 'foreground')
        """
        return cls(tuple(default_class_names(num_classes)), tuple(_default_colours(num_classes)))

    @classmethod
    def resolve(
        cls,
        num_classes: int,
        specs: Sequence[ClassSpec] | None = None,
        mask_colours: Sequence[Sequence[int] | None] | None = None,
        where: str = "classes",
    ) -> Classes:
        """Names and colours for ``num_classes`` classes from what the user and the masks say.

        Args:
            num_classes: the number of classes.
            specs: the user's classes (from :func:`parse_classes`); there must be exactly ``num_classes``.
            mask_colours: the colour of each class in colour masks (shorter lists and ``None`` entries allowed).
            where: the option or config key the specs came from, for the message.

        Raises:
            ConfigError: ``specs`` does not have one entry per class.

        >>> Classes.resolve(2, parse_classes("membrane,cell:#00ff00")).colours
        ((0, 0, 0), (0, 255, 0))
        """
        if specs is not None and len(specs) != num_classes:
            raise ConfigError(
                f"{where}: {len(specs)} class name(s) ({', '.join(s.name for s in specs)}) for {num_classes} "
                f"classes; name every class, class 0 (background) first"
            )
        base = cls.default(num_classes)
        names = [s.name for s in specs] if specs is not None else list(base.names)
        colours = list(base.colours)
        for k, c in enumerate(list(mask_colours or [])[:num_classes]):
            if c is not None:
                colours[k] = parse_colour(c, where)
        for k, s in enumerate(specs or []):
            if s.colour is not None:
                colours[k] = s.colour
        return cls(tuple(names), tuple(colours))

    @classmethod
    def from_model(cls, names: Sequence[str], colours: Sequence[Sequence[int]]) -> Classes:
        """The classes a model predicts, from its file's ``class_names`` and ``class_colours``.

        A single-logit (sigmoid) network names its one output, the foreground; it predicts two classes,
        so the background comes first.

        >>> Classes.from_model(["cell"], [(0, 255, 0)]).names
        ('background', 'cell')
        """
        rgb = [parse_colour(c, "class_colours") for c in colours]
        if len(names) == 1:
            return cls(("background", *names), (palette(1)[0], *rgb))
        return cls(tuple(names), tuple(rgb))

    def to_specs(self) -> list[ClassSpec]:
        return [ClassSpec(n, c) for n, c in zip(self.names, self.colours, strict=True)]
