"""Convolutions whose weights are reordered for oneDNN once, not at every call.

On CPU, ``F.conv2d`` hands oneDNN the weight in PyTorch's layout, and oneDNN reorders it into
its blocked layout at every call. For the generator's wide layers at low resolution (1024→1024
3×3 at 8×4 pixels: 38 MB of weights for 0.3 G multiply-adds) the reorder, which reads and
writes every weight, costs several times the convolution (``docs/performance.md``).
``PrepackedConv2d`` keeps the reordered weight and calls oneDNN's convolution with it (the op behind PyTorch's own frozen-graph
optimisation). On channels-last float32 input it gives the same bits as ``F.conv2d``.

oneDNN picks the weight's blocked layout per problem, the batch size and the picture size
included (blocks of 16, 24 or 32 output channels, padded or not), and a weight packed in another
layout than the one its call picks is reordered again inside that call. So the packed weight
follows the inputs: it is packed for the shape it is called with, and packed again only when a
new input shape calls for another layout (:func:`_layout`).

It only changes how an inference forward runs: the parameters, the state dict and every other
case (gradients, CUDA, other dtypes, padding modes, tracing and export) stay those of
``nn.Conv2d``. The packed weight is rebuilt whenever the weight changes in place (its version
counter) or moves. Opt-in, ``set_compute_dtype(module, torch.bfloat16)`` runs the inference
convolutions in bfloat16 (``--precision bf16``), which is fast but not exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_usable = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# oneDNN packs bfloat16 weights only on CPUs with native bf16 conversions (AVX-512 BW/VL/DQ or
# AVX-NE-CONVERT); elsewhere bf16 convolutions take PyTorch's plain path.
_bf16_usable = _usable and torch.ops.mkldnn._is_mkldnn_bf16_supported()
try:  # oneDNN's description of a packed tensor's layout, where this torch exposes it
    _serialized_layout = torch.ops.mkldnn._get_mkldnn_serialized_md if _usable else None
except (AttributeError, RuntimeError):
    _serialized_layout = None
_REMEMBERED_SHAPES = 64  # input shapes whose layout a convolution remembers (then it starts afresh)


def _reorder(conv: nn.Conv2d, weight: torch.Tensor, input_shape: tuple[int, ...] | None) -> torch.Tensor:
    """``weight`` (plain, or already packed in some layout) packed in the layout oneDNN's
    convolution picks for inputs of ``input_shape`` (None: for a shape oneDNN assumes)."""
    source = weight if weight.is_mkldnn else weight.contiguous().to_mkldnn()
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        source, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        None if input_shape is None else list(input_shape))


def _layout(packed: torch.Tensor, input_shape: tuple[int, ...] | None) -> object:
    """What identifies a packed weight's layout: oneDNN's serialized memory description (equal
    descriptions, equal layouts), or, where torch does not expose it, the input shape it was
    packed for (then every new shape packs again)."""
    if _serialized_layout is None:
        return input_shape
    return bytes(_serialized_layout(packed).tolist())


class PrepackedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with its weight packed once for oneDNN, used for inference on CPU.

    ``compute_dtype`` (None, or ``torch.bfloat16``; set by :func:`set_compute_dtype`) runs the
    inference convolution in that dtype, on any device, and returns the input's dtype: an opt-in
    speed-for-exactness trade (bf16 convs use AMX / tensor cores), not the reference arithmetic.
    """

    _packed: torch.Tensor | None = None   # the weight as the call takes it: packed, or cast only
    _packed_key: tuple | None = None
    _packed_layout: object = None          # see _layout
    _layouts: dict | None = None           # input shape -> the layout oneDNN picks for it
    compute_dtype: torch.dtype | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PrepackedConv2d:
        """A packed conv sharing ``conv``'s parameters (same state-dict keys and values)."""
        return _same_conv(conv, cls)

    def _inference(self, x: torch.Tensor) -> bool:
        return (not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
                and not torch.onnx.is_in_onnx_export())

    def _can_pack(self, x: torch.Tensor) -> bool:
        return (_usable and x.device.type == "cpu" and x.dim() == 4
                and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _bf16_usable))
                and self.weight.dtype == torch.float32
                and self.weight.device.type == "cpu"
                and self.padding_mode == "zeros" and not isinstance(self.padding, str))

    def _weight_as(self, dtype: torch.dtype, packed: bool, input_shape: tuple[int, ...] | None = None
                   ) -> torch.Tensor:
        """The weight in ``dtype``, packed for oneDNN (in the layout its convolution picks for
        inputs of ``input_shape``) or not; made once per weight version and layout."""
        w = self.weight
        key = (w.data_ptr(), w._version, tuple(w.shape), w.device, dtype, packed)
        if self._packed_key != key:
            self._packed, self._packed_key, self._layouts = None, key, {}
        if not packed:
            if self._packed is None:
                self._packed = w.detach().to(dtype)
            return self._packed
        return self._packed_for(input_shape, lambda: w.detach().to(dtype))

    def _packed_for(self, input_shape: tuple[int, ...] | None,
                    plain: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The packed weight in the layout picked for ``input_shape``: the one held when that
        shape is known to pick its layout; else packed (from ``plain()``: the weight, plain or
        packed) for the shape, which is then remembered."""
        layouts = self._layouts if self._layouts is not None else {}
        layout = layouts.get(input_shape)
        if self._packed is None or layout is None or layout != self._packed_layout:
            packed = _reorder(self, plain(), input_shape)
            layout = _layout(packed, input_shape)
            if len(layouts) >= _REMEMBERED_SHAPES:
                layouts.clear()
            layouts[input_shape] = layout
            self._packed, self._packed_layout, self._layouts = packed, layout, layouts
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._inference(x):
            return super().forward(x)
        dtype = self.compute_dtype or x.dtype
        x_in = x.to(dtype)
        bias = None if self.bias is None else self.bias.detach().to(dtype)
        if self._can_pack(x_in):
            y = torch.ops.mkldnn._convolution_pointwise(
                x_in, self._weight_as(dtype, True, tuple(x_in.shape)), bias, list(self.padding), list(self.stride),
                list(self.dilation), self.groups, "none", [], "")
        elif dtype == x.dtype:
            return super().forward(x)
        else:
            y = self._conv_forward(x_in, self._weight_as(dtype, packed=False), bias)
        return y.to(x.dtype)

    def __getstate__(self):
        # The packed weight is an opaque oneDNN tensor: copies and pickles rebuild it on first use.
        state = super().__getstate__().copy()
        for name in ("_packed", "_packed_key", "_packed_layout", "_layouts"):
            state.pop(name, None)
        return state


class PackedOnlyConv2d(PrepackedConv2d):
    """A ``PrepackedConv2d`` that keeps its weight in oneDNN's packed layout only, for networks
    that only ever run inference on the CPU in float32 (``Synthesizer`` makes them with
    :func:`release_plain_weights`): the plain copy beside the packed one would double the memory
    of the weights, most of a wide generator's resident memory.

    ``weight`` is still there to read (state dict, copies, inputs the packed convolution does not
    take): it is unpacked from the packed copy, exactly (a reorder moves values, it does not round
    them), at each read. Moving or casting the module is refused: it is made for one place.
    """

    _plain_shape: tuple[int, ...] = ()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PackedOnlyConv2d:
        same = _same_conv(conv, cls)
        same._pack(conv.weight.detach())
        return same

    def _pack(self, weight: torch.Tensor) -> None:
        """Hold ``weight`` packed only (for the shape oneDNN assumes, until the first call)."""
        self._plain_shape = tuple(weight.shape)
        self._packed = _reorder(self, weight.float(), None)
        self._packed_layout, self._layouts = _layout(self._packed, None), {}
        self._parameters.pop("weight", None)

    @property
    def weight(self) -> torch.Tensor:  # noqa: D102 - nn.Conv2d's weight, unpacked on each read
        if self._packed is None:  # while nn.Conv2d's constructor runs
            if "weight" not in self._parameters:
                raise AttributeError("weight")
            return self._parameters["weight"]
        return self._packed.to_dense().view(self._plain_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No gradient flows to a packed weight: only the input's requirement matters (reading
        # self.weight here would unpack it at every call).
        if (not (torch.is_grad_enabled() and x.requires_grad) and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export()
                and x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.float32):
            bias = None if self.bias is None else self.bias.detach()
            # Packed again, straight from the copy held (a reorder between layouts), when this
            # shape picks another layout: one copy at a time, the weights' memory is what this
            # class saves.
            weight = self._packed_for(tuple(x.shape), lambda: self._packed)
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, list(self.padding), list(self.stride), list(self.dilation), self.groups, "none",
                [], "")
        return self._conv_forward(x, self.weight, self.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        weight = state_dict.get(prefix + "weight")
        if weight is None:
            missing_keys.append(prefix + "weight")
        elif tuple(weight.shape) != self._plain_shape:
            error_msgs.append(f"size mismatch for {prefix}weight: {tuple(weight.shape)} in the state dict, "
                              f"{self._plain_shape} here")
        else:
            self._pack(weight.detach())
        rest = {k: v for k, v in state_dict.items() if k != prefix + "weight"}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, recurse=True):
        probe = fn(torch.zeros(1, 1, 1, 1))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise RuntimeError("a packed-only convolution runs float32 inference on the CPU; load the model "
                               "again to move or cast it")
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_plain_weight"] = self.weight.clone()
        return state

    def __setstate__(self, state):
        plain = state.pop("_plain_weight")
        super().__setstate__(state)
        self._pack(plain)


def release_plain_weights(module: nn.Module, keep: tuple[type[nn.Module], ...] = ()) -> nn.Module:
    """Make every ``PrepackedConv2d`` in ``module`` that runs exact float32 packed inference a
    :class:`PackedOnlyConv2d`, except those inside modules of the ``keep`` types (whose weights
    are read directly, e.g. the label networks the fast SPADE path turns into tables); in place;
    returns the module. Where packing does not apply (no oneDNN) it changes nothing."""
    if not _usable:
        return module
    kept = {id(m) for owner in module.modules() if isinstance(owner, keep) for m in owner.modules()}
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if (type(child) is PrepackedConv2d and id(child) not in kept and child.compute_dtype is None
                    and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32
                    and child.padding_mode == "zeros" and not isinstance(child.padding, str)):
                setattr(parent, name, PackedOnlyConv2d.from_conv(child))
    return module


def set_compute_dtype(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """Run every ``PrepackedConv2d`` in ``module`` in ``dtype`` at inference (None: the input's
    dtype, the exact default); returns the module."""
    for layer in module.modules():
        if isinstance(layer, PrepackedConv2d):
            layer.compute_dtype = dtype
    return module


def prepack_convolutions(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Conv2d`` inside ``module`` by a ``PrepackedConv2d`` sharing its
    parameters, in place; returns the module."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                setattr(parent, name, PrepackedConv2d.from_conv(child))
    return module


def unpack_convolutions(module: nn.Module) -> nn.Module:
    """The inverse of ``prepack_convolutions``: plain ``nn.Conv2d`` modules again, in place."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, PrepackedConv2d):
                setattr(parent, name, _same_conv(child, nn.Conv2d))
    return module


def _same_conv(conv: nn.Conv2d, cls: type[nn.Conv2d]) -> nn.Conv2d:
    """A ``cls`` with ``conv``'s hyperparameters, sharing its parameter tensors (no copy)."""
    same = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
               bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta")
    weight = conv.weight  # a packed-only conv's weight is unpacked on reading: a plain tensor
    same.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    same.bias = conv.bias
    return same.train(conv.training)
