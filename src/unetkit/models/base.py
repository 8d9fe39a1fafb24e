"""The contract every unetkit network keeps: channels, classes, recorded arguments, and its shape contract.

Subclasses write a plain ``__init__``; the base class wraps it (``__init_subclass__``) so that, for every
construction, the bound constructor arguments (defaults applied) are checked once by
:meth:`SegmentationModel.check_arguments`, recorded in ``model.hparams`` (what a model file stores to
rebuild the network: nothing is written by hand, so nothing can be forgotten) and turned into
``model.contract``, the network's :class:`~unetkit.shapes.ShapeContract`. The contract also comes without
building anything: ``cls.contract_from_args(**args)``.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from unetkit.errors import InputShapeError
from unetkit.models.blocks import BLOCKS
from unetkit.models.layers import ACTIVATIONS, INITS, NORMS, UPSAMPLES
from unetkit.shapes import PADDINGS, ShapeContract


def memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    """The memory layout of a ``spatial_dims`` network's tensors: channels-last (NHWC in 2D, NDHWC in 3D) where
    ``channels_last``, else PyTorch's default (channels-first). Where it is faster is measured, not assumed
    (the plan's ``channels-last`` row, docs/planning.md)."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def _plain(value: Any) -> Any:
    """``value`` as JSON keeps it (tuples become lists), so a reloaded model's ``hparams`` compare equal."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _bind(
    cls: type[SegmentationModel], signature: inspect.Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The constructor arguments of ``cls`` by name, defaults applied (``self`` excluded)."""
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: {exc}") from None
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0:
            continue  # self
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _uniform(values: tuple[int, ...], what: str) -> int:
    if len(set(values)) != 1:
        raise ValueError(f"this network's {what} differs per axis {values}; use model.contract.{what}()")
    return values[0]


class SegmentationModel(nn.Module):
    """Base class: a network mapping ``(B, in_channels, *S)`` images to ``(B, num_classes, *S_out)`` logits.

    Subclasses set ``spatial_dims``, ``in_channels``, ``num_classes``, ``depth`` and ``padding`` in their
    ``__init__``, and implement :meth:`_build_contract`. ``hparams`` and ``contract`` are set for them. A
    subclass of a network that passes its parent's arguments through (the rest left at their defaults)
    inherits its parent's contract rule; one that maps them otherwise (e.g. fixes ``depth``) must give its
    own :meth:`_build_contract`, and constructing it says so.

    The shape methods below (``output_shape``, ``legal_size``, ...) delegate to ``self.contract``, the one
    implementation of the size arithmetic (see :mod:`unetkit.shapes`): for ``same`` nets a legal size is a
    multiple of the product of the pools (``2**depth``) and the output has the input's size; for ``valid``
    nets (the paper's) the legal sizes are those the unpadded convolutions and poolings reduce evenly, and
    the output is smaller by ``2 * margin``.
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    depth: int
    padding: str
    #: the bound constructor arguments (defaults applied), JSON-shaped: what a model file rebuilds from
    hparams: dict[str, Any]
    #: which input sizes are legal, what comes out
    contract: ShapeContract

    #: the paddings this class supports, and why, when only ``same`` (for the error message)
    paddings: ClassVar[tuple[str, ...]] = PADDINGS
    same_only_reason: ClassVar[str] = ""
    #: constructor arguments that must be integers >= 1 (checked when present)
    positive_ints: ClassVar[tuple[str, ...]] = ("in_channels", "num_classes", "depth", "width")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
            raise TypeError(f"{cls.__name__}.__init__ takes *args; a model's arguments must have names")

        @functools.wraps(init)
        def __init__(self: SegmentationModel, *args: Any, **kw: Any) -> None:
            # the outermost constructor (the class built, or the nearest parent whose __init__ it inherits)
            # checks and records; a parent's constructor, called by super().__init__, gives the contract
            # of the network it builds, which the class built must agree with
            owner = type(self) if type(self).__init__ is __init__ else cls
            bound = _bind(cls, signature, args, kw)
            owner.check_arguments(bound)
            init(self, *args, **kw)
            contract = owner._build_contract(bound)
            built = self.__dict__.get("contract")
            if built is not None and built != contract:
                raise TypeError(
                    f"{owner.__name__}: its arguments give another shape contract than the network it builds "
                    f"({contract} != {built}); give {owner.__name__} its own _build_contract"
                )
            self.contract = contract
            self.hparams = _plain(bound)

        setattr(cls, "__init__", __init__)  # noqa: B010 (mypy refuses assigning to a method)

    # ---- arguments -----------------------------------------------------------------------------------
    @classmethod
    def bind_arguments(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` completed with the constructor's defaults and checked (:meth:`check_arguments`).

        Raises:
            TypeError: an unknown or missing argument.
            ValueError: a bad value.
        """
        init: Callable[..., None] = cls.__init__
        bound = _bind(cls, inspect.signature(init), (), args)
        cls.check_arguments(bound)
        return bound

    @classmethod
    def constructor_defaults(cls) -> dict[str, Any]:
        """The defaults of the constructor's arguments.

        A class's :meth:`check_arguments` and :meth:`_build_contract` read ``{**Owner.constructor_defaults(),
        **args}``, so a subclass that passes some of its parent's arguments through unchanged and leaves
        the others at their defaults needs neither method of its own.
        """
        init: Callable[..., None] = cls.__init__
        params = inspect.signature(init).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    @classmethod
    def check_arguments(cls, args: Mapping[str, Any]) -> None:
        """The one check of constructor arguments shared by every network (subclasses add their own).

        ``spatial_dims`` in (2, 3); ``padding`` among :attr:`paddings`; :attr:`positive_ints` integers
        ``>= 1``; ``dropout`` in ``[0, 1)``; ``block``, ``norm``, ``activation``, ``upsample``, ``init`` known names.

        Raises:
            ValueError: naming the argument, the value and what is accepted.
        """
        dims = args.get("spatial_dims")
        if dims not in (2, 3) or isinstance(dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {dims!r}")
        padding = args.get("padding", "same")
        if padding not in cls.paddings:
            if cls.paddings == ("same",):
                raise ValueError(
                    f"padding={padding!r}: {cls.__name__} supports only padding='same' ({cls.same_only_reason}); "
                    "use UNet(padding='valid') for the overlap-tile strategy"
                )
            raise ValueError(f"padding must be one of {cls.paddings}, got {padding!r}")
        for name in cls.positive_ints:
            if name in args:
                value = args[name]
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        dropout = args.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        named = (
            ("block", BLOCKS),
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
            ("upsample", UPSAMPLES),
            ("init", INITS),
        )
        for name, known in named:
            value = args.get(name)
            if value is not None and (not isinstance(value, str) or value.lower() not in known):
                raise ValueError(f"{name} must be one of {known}, got {value!r}")

    @classmethod
    def contract_from_args(cls, **args: Any) -> ShapeContract:
        """The shape contract of ``cls(**args)``, without building (or initialising) any layer.

        >>> from unetkit.models import UNet
        >>> UNet.contract_from_args(spatial_dims=2, in_channels=1, num_classes=2, padding="valid").margin()
        (92, 92)
        """
        return cls._build_contract(cls.bind_arguments(args))

    @classmethod
    def _build_contract(cls, args: Mapping[str, Any]) -> ShapeContract:
        """The contract from bound, checked arguments; every network class implements it."""
        raise NotImplementedError(f"{cls.__name__} does not say which input sizes it takes (_build_contract)")

    # ---- the shape contract (delegated) --------------------------------------------------------------
    def min_input_size(self) -> int:
        """The smallest legal input size along one axis (per axis: ``model.contract.min_input_size()``)."""
        return _uniform(self.contract.min_input_size(), "min_input_size")

    def is_legal_size(self, n: int, axis: int | None = None) -> bool:
        """Whether ``n`` is a legal input size along ``axis`` (None: every axis, for isotropic nets)."""
        return self.contract.is_legal(n, axis)

    def legal_size(self, n: int, mode: str = "nearest", axis: int | None = None) -> int:
        """A legal input size near ``n``: ``"floor"``, ``"ceil"`` or ``"nearest"`` (ties go up).

        >>> from unetkit import create_model
        >>> create_model("unet_paper").legal_size(570)
        572
        """
        return self.contract.legal_size(n, axis, mode)

    def check_input_shape(self, spatial: Sequence[int]) -> None:
        """Raise :class:`InputShapeError` naming the nearest legal sizes if ``spatial`` is not legal."""
        self.contract.check(spatial)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial output size for a legal spatial input size.

        >>> from unetkit import create_model
        >>> create_model("unet_paper").output_shape((572, 572))
        (388, 388)
        """
        return self.contract.output_shape(input_shape)

    def input_shape_for(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial input size that yields exactly ``output_shape``.

        >>> from unetkit import create_model
        >>> create_model("unet_paper").input_shape_for((388, 388))
        (572, 572)
        """
        return self.contract.input_shape_for(output_shape)

    def margin(self) -> int:
        """Pixels lost per side by a valid net (0 for same nets); per axis: ``model.contract.margin()``."""
        return _uniform(self.contract.margin(), "margin")

    def count_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"expected a tensor of shape (B, {self.in_channels}, "
                f"{', '.join('S' + str(i) for i in range(self.spatial_dims))}), got {tuple(x.shape)}"
            )
        self.contract.check(x.shape[2:])
