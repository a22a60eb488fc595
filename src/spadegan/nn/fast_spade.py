"""An exact, faster computation of SPADE's γ and β from a one-hot label map.

The reference SPADE layer (Eq. 1) runs a dense 3×3 conv from the one-hot map (up to 184
channels) to 128 channels, then two 3×3 convs to γ and β, at every resolution, after resizing the
whole one-hot map again in each layer. The same numbers come out much cheaper:

* **The one-hot conv is a lookup.** A 3×3 conv over a one-hot map is, at each pixel, the sum
  over the 9 kernel offsets of the weight column of the class found at that neighbour: an
  embedding sum (``F.embedding_bag``), with one zero row for "outside the image" (the zero
  padding). The instance-edge channel, when there is one, stays a small 1-channel conv.
* **Region interiors come from a per-class table.** Where a pixel's 5×5 neighbourhood (the
  receptive field of ``mlp_shared`` then ``mlp_gamma``/``mlp_beta``) holds one class, no instance
  edge and no image border (both convs zero-pad), γ and β depend on that class only: they are
  computed once per class. Only the other, boundary, pixels get the exact 3×3 conv, as one
  matrix product over their gathered patches, γ and β together.
* **The label map is resized once per resolution**, from the class ids (nearest resizing of the
  ids picks the same source pixels as nearest resizing of the one-hot map), not once per layer.

Everything is differentiable, so training can use it too. :class:`LabelMaps` holds the ids and
the per-resolution masks for one generator forward; :func:`spade_modulate` computes one SPADE
layer's output from them. When the input is not exactly one-hot (and 0/1 edges),
:func:`label_maps_from_semantics` returns None and the caller takes the reference path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import kernels


@dataclass
class Level:
    """The label map at one resolution."""

    ids: torch.Tensor                 # N×H×W int64 class ids
    edges: torch.Tensor | None        # N×1×H×W float 0/1, or None without an edge channel
    interior: torch.Tensor            # N×H×W bool: one class in the 5×5 window, no edge, not near the border
    boundary_index: torch.Tensor      # B flat indices (into N·H·W) of the other pixels
    boundary_patch_index: torch.Tensor  # B×9 indices of their 3×3 neighbours in the padded map
    neighbour_index: torch.Tensor | None  # (N·H·W)×9 indices into the offset-major embedding table (patch gather only)
    pixel_row: torch.Tensor | None = None     # N·H·W: the row of [s | t] per pixel: its class (interior), or K + j
                                              # (boundary pixel j, or with patterns its distinct context j)
    pattern_rep: torch.Tensor | None = None   # U pixels, one per distinct 3×3 key pattern
    pattern_bag: torch.Tensor | None = None   # V×9 rows of the per-(pattern, offset) products, one per distinct context
    pattern_neighbours: torch.Tensor | None = None  # U×9 table rows of the representatives' neighbourhoods


@dataclass
class LabelMaps:
    """Class ids (and instance edges) of a semantic map, with per-resolution levels cached."""

    ids: torch.Tensor                 # N×1×H×W int64
    edges: torch.Tensor | None        # N×1×H×W float
    num_classes: int                  # K: one-hot channels; the edge channel, if any, comes after
    levels: dict[tuple[int, int], Level] = field(default_factory=dict)

    def at(self, size: tuple[int, int]) -> Level:
        size = (int(size[0]), int(size[1]))
        if size not in self.levels:
            self.levels[size] = _make_level(self, size)
        return self.levels[size]


def label_maps_from_semantics(semantics: torch.Tensor) -> LabelMaps | None:
    """Recover class ids from a one-hot semantic map (+ an optional trailing 0/1 edge channel).

    Returns None when the map is not exactly that (soft labels, several classes at a pixel):
    the fast path is exact only for one-hot input.

    Two passes over the class channels instead of one per test: a map is one-hot exactly when
    every pixel's largest value is 1 and the map holds one nonzero per pixel (then that nonzero
    is the 1 and all else is 0; a NaN fails the first test). The max's index is the class id.
    """
    if semantics.dim() != 4 or semantics.shape[1] < 1:
        return None
    with torch.no_grad():
        n, c, h, w = semantics.shape
        pixels = n * h * w
        if c == 1:
            return LabelMaps(semantics.new_zeros(n, 1, h, w, dtype=torch.long), None, 1) \
                if bool((semantics == 1).all()) else None
        classes, last = semantics[:, :-1], semantics[:, -1:]
        peak, ids = classes.max(1, keepdim=True)
        if not bool(((last == 0) | (last == 1)).all()):
            return None
        class_nonzeros = int(torch.count_nonzero(classes))
        if class_nonzeros == pixels and bool((peak == 1).all()):
            if not bool(last.any()):
                # An edge channel that never fires is a class channel that never fires: the same
                # arithmetic, without the edge lookups.
                return LabelMaps(ids, None, c)
            return LabelMaps(ids, last.float(), c - 1)
        # All channels one-hot, the last one a class: the pixels without a class in the others.
        if class_nonzeros + int(torch.count_nonzero(last)) == pixels and bool((torch.maximum(peak, last) == 1).all()):
            return LabelMaps(torch.where(last == 1, c - 1, ids), None, c)
    return None


def _make_level(maps: LabelMaps, size: tuple[int, int]) -> Level:
    ids = maps.ids
    if tuple(ids.shape[2:]) != size:
        # 'nearest' as in the reference (not 'nearest-exact'): the same source pixels.
        ids = F.interpolate(ids.float(), size=size, mode="nearest").long()
    edges = maps.edges
    if edges is not None and tuple(edges.shape[2:]) != size:
        edges = F.interpolate(edges, size=size, mode="nearest")
    n, _, h, w = ids.shape
    k = maps.num_classes
    with torch.no_grad():
        # Each pixel's key, class·2 + edge bit; 'outside the image' = 2k, which no pixel has.
        keys = ids[:, 0] * 2
        if edges is not None:
            keys = keys + edges[:, 0].long()
        interior = _uniform_5x5(keys, 2 * k)
        boundary_index = (~interior).flatten().nonzero().squeeze(1)
        # Their 3×3 neighbourhoods in the activation map padded by one pixel, (N·(H+2)·(W+2)) rows.
        b_n, rest = boundary_index // (h * w), boundary_index % (h * w)
        b_y, b_x = rest // w, rest % w
        top_left = b_n * (h + 2) * (w + 2) + b_y * (w + 2) + b_x
        offsets = torch.tensor([dy * (w + 2) + dx for dy in range(3) for dx in range(3)], device=ids.device)
        boundary_patch_index = top_left[:, None] + offsets[None, :]
        # For the lookup of mlp_shared: the key of each of the 9 neighbours, as rows of an
        # offset-major table of 9·(2k+1) rows.
        padded = F.pad(keys, (1, 1, 1, 1), value=2 * k).flatten()
        table_offsets = torch.arange(9, device=ids.device) * (2 * k + 1)

        def neighbour_rows(pixels: torch.Tensor) -> torch.Tensor:
            """The 9 table rows of these flat pixel indices' neighbourhoods."""
            p_n, p_rest = pixels // (h * w), pixels % (h * w)
            corner = p_n * (h + 2) * (w + 2) + (p_rest // w) * (w + 2) + p_rest % w
            return padded[corner[:, None] + offsets[None, :]] + table_offsets

        pattern_rep, pattern_bag, context, pattern_neighbours = _distinct_patterns(
            neighbour_rows, boundary_index, b_n, b_y, b_x, n, h, w, k)
        # The patch gather (no pattern factoring) looks up every pixel's neighbourhood.
        neighbour_index = None if pattern_rep is not None else neighbour_rows(torch.arange(n * h * w, device=ids.device))
        pixel_row = ids[:, 0].reshape(-1).clone()
        pixel_row[boundary_index] = k + (context if context is not None
                                         else torch.arange(boundary_index.numel(), device=ids.device))
    return Level(ids=ids[:, 0], edges=edges, interior=interior, boundary_index=boundary_index,
                 boundary_patch_index=boundary_patch_index, neighbour_index=neighbour_index,
                 pixel_row=pixel_row, pattern_rep=pattern_rep, pattern_bag=pattern_bag,
                 pattern_neighbours=pattern_neighbours)


def _uniform_5x5(keys: torch.Tensor, outside: int) -> torch.Tensor:
    """N×H×W bool: the pixels whose 5×5 window holds one key, an even one (a class without an
    instance edge), and lies inside the image (padding with the ``outside`` key, which no pixel
    has, makes windows over the border mixed). Equal neighbours along rows, then along the
    centre column: a dozen boolean passes, no pooling."""
    n, h, w = keys.shape
    padded = F.pad(keys, (2, 2, 2, 2), value=outside)
    same_right = padded[:, :, 1:] == padded[:, :, :-1]           # N×(H+4)×(W+3)
    row_run = same_right[:, :, 0:w] & same_right[:, :, 1:w + 1] & same_right[:, :, 2:w + 2] & same_right[:, :, 3:w + 3]
    centre = padded[:, :, 2:w + 2]
    same_down = centre[:, 1:] == centre[:, :-1]                   # N×(H+3)×W
    uniform = same_down[:, 0:h] & same_down[:, 1:h + 1] & same_down[:, 2:h + 2] & same_down[:, 3:h + 3]
    for dy in range(5):
        uniform &= row_run[:, dy:dy + h]
    return uniform & (keys % 2 == 0)


def _distinct_patterns(neighbour_rows, boundary_index, b_n, b_y, b_x, n, h, w, k):
    """Distinct-pattern factoring of the boundary convolution.

    mlp_shared's activation at a pixel depends only on the 3×3 pattern of keys around it, so it
    is computed once per distinct pattern u; then Y[o, u] = W_o · actv_u for each offset o (row
    o·U + u), and a boundary pixel's γ|β is the sum of 9 rows of Y (an embedding sum). Its
    products cost U/B of the gathered patches' (9·U rows of hidden against B rows of 9·hidden),
    but numbering the patterns and contexts and summing the bags cost too, which the smallest
    maps do not repay: it is taken where the patterns number under two-thirds of the boundary
    pixels (3·U < 2·B; docs/performance.md), else returns Nones and the patches are gathered.
    Patterns get exact integer keys: each row of 3 keys packed, the distinct rows numbered, then
    the 3 row numbers packed.

    The sum is then made once per distinct *context*, the 9 rows a boundary pixel sums (its 5×5
    neighbourhood of keys, the image border included): boundary pixels share few of them (a
    street scene at 512×256: 25,888 boundary pixels, 714 contexts), so γ|β is computed, and
    later looked up, per context. Returns the pattern representatives, the V×9 context bags,
    each boundary pixel's context and the representatives' neighbourhood rows (Nones when the
    patches are gathered instead).
    """
    none = None, None, None, None
    if boundary_index.numel() == 0:
        return none
    device = boundary_index.device
    # Only the patterns of the boundary pixels' neighbours are needed (the boundary dilated by
    # one pixel), not those of the whole map.
    boundary = torch.zeros(n * h * w, dtype=torch.bool, device=device)
    boundary[boundary_index] = True
    around = F.pad(boundary.view(n, h, w), (1, 1, 1, 1))
    needed = around[:, 1:h + 1, 1:w + 1].clone()
    for dy in range(3):
        for dx in range(3):
            needed |= around[:, dy:dy + h, dx:dx + w]
    needed_index = needed.flatten().nonzero().squeeze(1)
    m = 2 * k + 1
    needed_rows = neighbour_rows(needed_index)
    keys = needed_rows - torch.arange(9, device=device) * m  # keys in [0, 2k]
    rows = (keys.view(-1, 3, 3) * torch.tensor([m * m, m, 1], device=device)).sum(-1)
    distinct_rows, row_ids = torch.unique(rows, return_inverse=True)
    r = distinct_rows.numel()
    if r ** 3 >= 2 ** 62:
        return none
    pattern_keys = (row_ids * torch.tensor([r * r, r, 1], device=device)).sum(-1)
    patterns, pattern_of_needed = torch.unique(pattern_keys, return_inverse=True)
    u = patterns.numel()
    if 3 * u >= 2 * boundary_index.numel():
        return none
    # One representative pixel per pattern: the first pixel that has it.
    first = torch.full((u,), needed_index.numel(), dtype=torch.long, device=device)
    first.scatter_reduce_(0, pattern_of_needed, torch.arange(needed_index.numel(), device=device), "amin")
    representatives = needed_rows[first]
    first = needed_index[first]
    pattern_of_pixel = torch.zeros(n * h * w, dtype=torch.long, device=device)  # read only where needed
    pattern_of_pixel[needed_index] = pattern_of_needed
    # For each boundary pixel and offset: the row (offset·U + pattern) of Y, or the zero row
    # 9·U for a neighbour outside the image (the zero padding of the activations).
    bags = []
    for o, (dy, dx) in enumerate((dy, dx) for dy in range(3) for dx in range(3)):
        ny, nx = b_y + dy - 1, b_x + dx - 1
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        neighbour = b_n * h * w + ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)
        bags.append(torch.where(inside, pattern_of_pixel[neighbour] + o * u, torch.full_like(neighbour, u * 9)))
    bags = torch.stack(bags, dim=1)
    contexts, context_of_pixel = _distinct_rows(bags, 9 * u + 1)
    return first, contexts, context_of_pixel, representatives


def _distinct_rows(rows: torch.Tensor, base: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of an integer matrix with 9 columns of values in [0, base), and each
    row's number among them: exact, by packing 3 columns into one integer, numbering the
    distinct packed triples, then packing the 3 triple numbers."""
    if base ** 3 >= 2 ** 62 or rows.shape[0] ** 3 >= 2 ** 62:
        return torch.unique(rows, dim=0, return_inverse=True)
    weights = torch.tensor([base * base, base, 1], device=rows.device)
    triples, triple_ids = torch.unique((rows.view(-1, 3, 3) * weights).sum(-1), return_inverse=True)
    t = triples.numel()
    keys = (triple_ids * torch.tensor([t * t, t, 1], device=rows.device)).sum(-1)
    distinct, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((distinct.numel(),), rows.shape[0], dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(rows.shape[0], device=rows.device), "amin")
    return rows[first], inverse


def _shared_table(weight: torch.Tensor, num_classes: int, has_edges: bool) -> torch.Tensor:
    """mlp_shared's weight (hidden × C × 3 × 3) as an offset-major table of 9·(2K+1) × hidden
    rows: row o·(2K+1) + 2c + e is the column of class c at offset o, plus the edge channel's
    column when the edge bit e is set; row o·(2K+1) + 2K is zero ('outside the image', which the
    zero padding makes contribute nothing)."""
    hidden = weight.shape[0]
    columns = weight[:, :num_classes].permute(2, 3, 1, 0).reshape(9, num_classes, hidden)
    if has_edges:
        edge = weight[:, num_classes].permute(1, 2, 0).reshape(9, 1, hidden)
    else:
        edge = torch.zeros_like(columns[:, :1])
    keyed = torch.stack([columns, columns + edge], dim=2).reshape(9, 2 * num_classes, hidden)
    return torch.cat([keyed, keyed.new_zeros(9, 1, hidden)], dim=1).reshape(9 * (2 * num_classes + 1), hidden)


@dataclass(frozen=True)
class LabelNetworkTables:
    """One SPADE layer's label network rearranged for lookups (:func:`_label_network`)."""

    table: torch.Tensor               # mlp_shared's weight by (offset, key): 9·(2K+1) × hidden (see _shared_table)
    shared_bias: torch.Tensor         # mlp_shared's bias, hidden
    weight_sum: torch.Tensor | None   # Σ_o W_o of the γ|β conv, hidden × 2C (inference only)
    matrix: torch.Tensor | None       # the γ|β weight offset-major, (9·hidden) × 2C: block o is W_o (inference only)
    bias: torch.Tensor                # the γ|β conv's bias, 2C

    @property
    def hidden(self) -> int:
        return self.table.shape[1]

    @property
    def channels(self) -> int:
        return self.bias.shape[0] // 2


def _label_network(spade, num_classes: int, has_edges: bool) -> LabelNetworkTables:
    """The label network's weights rearranged for the lookups. With gradients (training) only
    the table and the bias are made: the products with the γ|β weight rearrange it themselves
    (:class:`_GammaBetaProduct`)."""
    shared, gamma, beta = spade.mlp_shared[0], spade.mlp_gamma, spade.mlp_beta
    bias = torch.cat([gamma.bias, beta.bias], dim=0)
    table = _shared_table(shared.weight, num_classes, has_edges)
    if torch.is_grad_enabled() and any(p.requires_grad for p in spade.parameters()):
        return LabelNetworkTables(table, shared.bias, None, None, bias)
    matrix = _shared_gamma_beta_matrix(spade)
    if matrix is None:
        matrix = _gamma_beta_matrix(gamma.weight, beta.weight, "offsets")
    return LabelNetworkTables(table, shared.bias, _gamma_beta_matrix(gamma.weight, beta.weight, "sum"), matrix, bias)


class LabelNetworkCache:
    """The tables of each SPADE layer (:class:`LabelNetworkTables`), kept between inference
    forwards: made from a layer's weights once, and made again when any of them changes (a new
    state dict, a move, a cast, an in-place update). Owned by the generator that runs the fast
    path; not part of its state, and a copy of the generator starts with an empty one.

    Nothing is kept for a layer in training mode: its weights change at every step, and tables
    kept from the discriminator step's no-grad forward would only add to the memory between
    steps."""

    def __init__(self) -> None:
        # Keyed by the layer itself, held weakly: a layer that is dropped takes its tables along.
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo: dict) -> LabelNetworkCache:
        return LabelNetworkCache()

    def tables(self, spade, num_classes: int, has_edges: bool) -> LabelNetworkTables:
        """``spade``'s tables for a map of ``num_classes`` classes (+ edges when ``has_edges``)."""
        params = tuple(spade.parameters())
        if spade.training or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            self._entries.pop(spade, None)
            return _label_network(spade, num_classes, has_edges)
        # What identifies the weights' values: the tensors, their storage and version counters.
        key = (num_classes, has_edges) + tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        entry = self._entries.get(spade)
        if entry is not None and entry[0] == key:
            return entry[1]
        tables = _label_network(spade, num_classes, has_edges)
        self._entries[spade] = (key, tables)
        return tables


def spade_modulate(spade, x: torch.Tensor, level: Level, num_classes: int,
                   negative_slope: float | None = None, cache: LabelNetworkCache | None = None) -> torch.Tensor:
    """The output of a :class:`~spadegan.nn.spade.SPADE` layer, ``norm(x)·(1 + γ) + β`` (Eq. 1),
    with γ and β computed as its convs compute them, from the label map at x's resolution.

    Per pixel it needs one row ``[s | t]`` and computes ``x̂·s + t``: s = 1 + γ, t = β; for
    eval-mode BatchNorm, 1/σ is folded into s on the per-class table and the boundary rows,
    before they are spread over the pixels, and x̂ = x − μ. With ``negative_slope``, the leaky
    ReLU that follows the layer is applied too (in the compiled kernel's pass when it runs).
    ``cache``: where the layer's tables are kept between inference forwards (None: made anew).
    """
    all_rows, extra_rows, fold = _modulation_rows(spade, x, level, num_classes, cache)
    norm = spade.param_free_norm
    centred = None if fold else norm(x)
    if kernels.usable(x if fold else centred, all_rows):
        # One pass per pixel: look the row up and modulate, without spreading the rows first.
        return kernels.modulate(x if fold else centred, all_rows, level.pixel_row,
                                norm.running_mean if fold else None, negative_slope, extra_rows)
    if extra_rows is not None:
        all_rows = torch.cat([all_rows, extra_rows])
    n, h, w = level.ids.shape
    channels = spade.mlp_gamma.out_channels
    if fold:
        centred = x - norm.running_mean.view(1, -1, 1, 1)
    if not (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
        # Channel-major for an NCHW x (training): pixel-major rows would make the modulated map,
        # and so every following conv, channels-last, and the convs would copy their (spectral-
        # normalized, so new each step) weights into that layout, several times per step.
        return modulate_rows(centred, all_rows, level.pixel_row, negative_slope)
    # Pixel-major rows for a channels-last x (inference).
    per_pixel = F.embedding(level.pixel_row, all_rows).view(n, h, w, 2 * channels).permute(0, 3, 1, 2)
    out = torch.addcmul(per_pixel[:, channels:], centred, per_pixel[:, :channels])
    return out if negative_slope is None else F.leaky_relu(out, negative_slope)


def spade_modulate_pair(first, second, x: torch.Tensor, maps: LabelMaps, upsample: bool,
                        first_slope: float | None = None, second_slope: float | None = None,
                        cache: LabelNetworkCache | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Two SPADE layers applied to one input in one pass of the compiled kernel: ``norm_s``
    and ``norm_0`` of a residual block with a learned shortcut (Fig. 4), on ``x`` upsampled 2×
    (nearest) when ``upsample``, as the generator feeds its up blocks. x is read once at its own
    resolution and the upsampled map is never made. Returns None where the kernel does not apply
    (training, another device or dtype, train-mode BatchNorm): the caller takes the usual path.

    Exact: nearest 2× upsampling copies each value to 4 pixels, so eval BatchNorm's x − μ
    commutes with it, and instance norm's statistics are those of x (the same values, each 4
    times; they are computed on x, so they round differently, at 1e-7).
    """
    if torch.is_grad_enabled() or not kernels.usable(x):
        return None
    norms = (first.param_free_norm, second.param_free_norm)
    folded = all(isinstance(nm, torch.nn.BatchNorm2d) and not nm.training and nm.running_mean is not None
                 for nm in norms)
    instance = all(isinstance(nm, torch.nn.InstanceNorm2d) and not nm.affine and not nm.track_running_stats
                   for nm in norms)
    if not (folded or instance):
        return None
    size = (x.shape[2] * 2, x.shape[3] * 2) if upsample else tuple(x.shape[2:])
    level = maps.at(size)
    rows = [_modulation_rows(spade, x, level, maps.num_classes, cache) for spade in (first, second)]
    if any(r[0].dtype != torch.float32 for r in rows):
        return None
    source = x if folded else norms[0](x).contiguous(memory_format=torch.channels_last)
    means = [nm.running_mean if folded else None for nm in norms]
    out = kernels.modulate_pair(source, upsample, level.pixel_row,
                                (rows[0][0], rows[0][1], means[0], first_slope),
                                (rows[1][0], rows[1][1], means[1], second_slope))
    return out[0], out[1]


def resnet_block_fast(block, x: torch.Tensor, maps: LabelMaps, upsample: bool,
                      cache: LabelNetworkCache | None = None, negative_slope: float = 0.2) -> torch.Tensor:
    """A :class:`~spadegan.nn.spade.SPADEResnetBlock` (Fig. 4) on the fast path: what its reference
    forward computes, with each SPADE layer's γ and β from the label maps, the leaky ReLU after
    norm_0 and norm_1 fused into their modulation, norm_s and norm_0 in one pass over x where the
    compiled kernel runs (x then never upsampled), each modulated map freed as soon as its conv
    has read it, and, without autograd, the sum written into conv_1's output. ``cache``: as for
    :func:`spade_modulate`."""
    pair = None
    if block.learned_shortcut:
        pair = spade_modulate_pair(block.norm_s, block.norm_0, x, maps, upsample, None, negative_slope, cache)
    if pair is not None:
        shortcut_in, main_in = pair
        del pair
        x_s = block.conv_s(shortcut_in)
        del shortcut_in
        dx = block.conv_0(main_in)
        del main_in
    else:
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        level = maps.at(x.shape[2:])
        x_s = (block.conv_s(spade_modulate(block.norm_s, x, level, maps.num_classes, None, cache))
               if block.learned_shortcut else x)
        dx = block.conv_0(spade_modulate(block.norm_0, x, level, maps.num_classes, negative_slope, cache))
    dx = block.conv_1(spade_modulate(block.norm_1, dx, maps.at(dx.shape[2:]), maps.num_classes, negative_slope, cache))
    if not torch.is_grad_enabled():
        return dx.add_(x_s)  # conv_1's output is ours: no new buffer at full resolution
    return x_s + dx


def _modulation_rows(spade, x: torch.Tensor, level: Level, num_classes: int, cache: LabelNetworkCache | None):
    """The per-pixel rows ``[s | t]`` of one SPADE layer: (rows, extra rows or None, whether
    eval BatchNorm's 1/σ is folded into s)."""
    shared = spade.mlp_shared[0]
    if shared.kernel_size != (3, 3) or spade.mlp_gamma.kernel_size != (3, 3):
        raise ValueError("the fast SPADE path handles 3×3 label-network kernels")
    n, h, w = level.ids.shape
    channels = spade.mlp_gamma.out_channels
    has_edges = level.edges is not None
    tables = (cache.tables(spade, num_classes, has_edges) if cache is not None
              else _label_network(spade, num_classes, has_edges))
    table, bias = tables.table, tables.bias

    norm = spade.param_free_norm
    fold = isinstance(norm, torch.nn.BatchNorm2d) and not norm.training and norm.running_mean is not None

    def rows(gamma_beta: torch.Tensor) -> torch.Tensor:
        gamma, beta = gamma_beta[:, :channels], gamma_beta[:, channels:]
        scale = 1 + gamma
        if fold:
            # The 1/σ of eval BatchNorm goes into the scale. The mean is subtracted from x
            # itself: folding it into the shift would subtract two large, nearly equal numbers
            # where running variances are small.
            scale = scale / torch.sqrt(norm.running_var + norm.eps)
        return torch.cat([scale, beta], dim=1)

    def rows_(gamma_beta: torch.Tensor) -> None:
        """``rows`` in place, for inference: the row tables are written once, without copies."""
        scale = gamma_beta[:, :channels]
        scale.add_(1)
        if fold:
            scale.div_(torch.sqrt(norm.running_var + norm.eps))

    # Interiors: a per-class row. In a one-class window without edges the activation is the
    # same at all 9 taps, relu(Σ_o table[o, 2c] + b), so γ|β = (Σ_o W_o) · actv_c + b.
    by_key = table.view(9, 2 * num_classes + 1, tables.hidden)
    class_actv = F.relu(by_key[:, 0:2 * num_classes:2].sum(0) + shared.bias)
    # Inference writes the row table in place; autograd (training) and autocast (whose products
    # change dtype) take the branch that builds it from parts.
    extra_rows = None  # boundary rows kept apart from the class rows (the compiled kernel reads both)
    if not torch.is_grad_enabled() and not _autocast_on(x.device.type):
        all_rows, extra_rows = _rows_in_place(level, tables, class_actv, rows_)
    else:
        weights = (spade.mlp_gamma.weight, spade.mlp_beta.weight)
        parts = [rows(gamma_beta_product(class_actv, None, *weights, bias, "sum", n, h, w))]

        # Boundaries: mlp_shared as an embedding sum over the 9 neighbours (+ bias, ReLU) where
        # needed, then the exact 3×3 γ|β conv, by distinct patterns or on gathered patches (zero
        # padding of the activations).
        if level.pattern_rep is not None:
            actv = F.relu(F.embedding_bag(level.pattern_neighbours, table, mode="sum") + shared.bias)
            products = gamma_beta_product(actv, None, *weights, None, "offsets", n, h, w)
            products = products.view(-1, 2 * channels)  # (9·U) × 2C: W_o · actv_u
            products = torch.cat([products, products.new_zeros(1, 2 * channels)])
            parts.append(rows(F.embedding_bag(level.pattern_bag, products, mode="sum") + bias))
        elif level.boundary_index.numel():
            actv = F.relu(F.embedding_bag(level.neighbour_index, table, mode="sum") + shared.bias)
            parts.append(rows(gamma_beta_product(actv, level.boundary_patch_index, *weights, bias, "patches",
                                                 n, h, w)))
        all_rows = torch.cat([part.to(parts[0].dtype) for part in parts])  # (K + B) × 2C
    return all_rows, extra_rows, fold


def _spread(rows: torch.Tensor, pixel_row: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """N × R × H × W, channel-major: pixel p takes row ``pixel_row[p]`` of ``rows`` (… × R)."""
    table = rows.t().unsqueeze(0).expand(n, -1, -1)
    index = pixel_row.view(n, 1, h * w).expand(n, rows.shape[1], h * w)
    return torch.gather(table, 2, index).view(n, rows.shape[1], h, w)


def _sum_rows(grad: torch.Tensor, pixel_row: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The transpose of :func:`_spread`: row r's sum of ``grad`` (N × R × H × W) over the pixels
    that take it, num_rows × R."""
    n, channels = grad.shape[:2]
    index = pixel_row.view(n, 1, -1).expand(n, channels, -1)
    summed = grad.new_zeros(n, channels, num_rows).scatter_add_(2, index, grad.reshape(n, channels, -1))
    return summed.sum(0).t()


class _ModulateRows(torch.autograd.Function):
    """``centred · s + t`` (then the leaky ReLU, if a slope is given), each pixel p taking the row
    ``[s | t]`` number ``pixel_row[p]``, channel-major (N × C × H × W). The arithmetic of the
    spread maps, ``addcmul`` and ``leaky_relu``, but what is kept for the backward pass is
    ``centred``, the output (which the next convolution keeps anyway) and the scale rows when
    they are fewer than the pixels (the scale map is spread from them again there), not the
    spread scale map and the output before the ReLU (whose sign is the output's). Where the
    compiled kernel applies, forward and backward are one pass each over the planes, and no map
    is spread."""

    @staticmethod
    def forward(ctx, centred, rows, pixel_row, negative_slope):
        n, channels, h, w = centred.shape
        ctx.negative_slope, ctx.num_rows = negative_slope, rows.shape[0]
        ctx.compiled = kernels.planes_usable(centred, rows)
        if ctx.compiled:
            rows_t = rows.t().contiguous()
            out = kernels.modulate_planes(centred, rows_t, pixel_row, negative_slope)
            ctx.save_for_backward(centred, rows_t[:channels], pixel_row, out if negative_slope is not None else None)
            return out
        out, scale = _modulated(centred, rows, pixel_row, negative_slope)
        kept_scale = rows[:, :channels].contiguous() if rows.shape[0] < n * h * w else scale
        ctx.save_for_backward(centred, kept_scale, pixel_row, out if negative_slope is not None else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        centred, scale, pixel_row, out = ctx.saved_tensors
        if ctx.compiled:
            grad_centred, grad_rows_t = kernels.modulate_planes_backward(
                grad, centred, scale, pixel_row, out, ctx.negative_slope, ctx.needs_input_grad[0],
                ctx.needs_input_grad[1])
            return grad_centred, (None if grad_rows_t is None else grad_rows_t.t()), None, None
        n, channels, h, w = centred.shape
        if out is not None:
            grad = torch.ops.aten.leaky_relu_backward(grad, out, ctx.negative_slope, True)
        grad_centred = grad_rows = None
        if ctx.needs_input_grad[0]:
            if scale.dim() == 2:
                scale = _spread(scale, pixel_row, n, h, w)
            grad_centred = grad * scale
        del scale
        if ctx.needs_input_grad[1]:
            grad_rows = torch.cat([_sum_rows(grad * centred, pixel_row, ctx.num_rows),
                                   _sum_rows(grad, pixel_row, ctx.num_rows)], dim=1)
        return grad_centred, grad_rows, None, None


def modulate_rows(centred: torch.Tensor, rows: torch.Tensor, pixel_row: torch.Tensor,
                  negative_slope: float | None = None) -> torch.Tensor:
    """``centred · s + t`` per pixel, from the row ``[s | t]`` of ``rows`` ((K + B) × 2C) that
    ``pixel_row`` names, then the leaky ReLU when ``negative_slope`` is given; channel-major
    (N × C × H × W), differentiable in ``centred`` and ``rows`` (:class:`_ModulateRows`)."""
    if torch.is_grad_enabled() and (centred.requires_grad or rows.requires_grad):
        return _ModulateRows.apply(centred, rows, pixel_row, negative_slope)
    if kernels.planes_usable(centred, rows):
        return kernels.modulate_planes(centred, rows.t().contiguous(), pixel_row, negative_slope)
    return _modulated(centred, rows, pixel_row, negative_slope)[0]


def _modulated(centred: torch.Tensor, rows: torch.Tensor, pixel_row: torch.Tensor,
               negative_slope: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`modulate_rows`'s output, and the spread scale map it multiplied by."""
    n, channels, h, w = centred.shape
    scale = _spread(rows[:, :channels], pixel_row, n, h, w)
    out = torch.addcmul(_spread(rows[:, channels:], pixel_row, n, h, w), centred, scale)
    return (out if negative_slope is None else F.leaky_relu(out, negative_slope)), scale


def _gamma_beta_matrix(gamma_weight: torch.Tensor, beta_weight: torch.Tensor, layout: str) -> torch.Tensor:
    """The γ|β conv's weight (2C × hidden × 3 × 3, as one conv) as the matrix a product takes:
    "sum": Σ_o W_o, hidden × 2C (a one-class window); "offsets": (9·hidden) × 2C, offset-major,
    the block of offset o being W_o (against gathered 3×3 patches, or per offset)."""
    channels, hidden = gamma_weight.shape[:2]
    if layout == "sum":
        return torch.cat([gamma_weight.sum(dim=(2, 3)), beta_weight.sum(dim=(2, 3))], dim=0).t().contiguous()
    # Each weight copied once, straight into its columns (no concatenated copy first).
    matrix = gamma_weight.new_empty(3, 3, hidden, 2 * channels)
    matrix[..., :channels].copy_(gamma_weight.permute(2, 3, 1, 0))
    matrix[..., channels:].copy_(beta_weight.permute(2, 3, 1, 0))
    return matrix.view(9 * hidden, 2 * channels)


def _gamma_beta_weight_grads(grad_matrix: torch.Tensor, layout: str, channels: int,
                             hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of the γ and the β weight from that of their matrix (the transposed
    rearrangement; Σ_o spreads one gradient over the 9 offsets)."""
    if layout == "sum":
        grad = grad_matrix.t()[:, :, None, None].expand(2 * channels, hidden, 3, 3)
    else:
        grad = grad_matrix.view(3, 3, hidden, 2 * channels).permute(3, 2, 0, 1)
    return grad[:channels].contiguous(), grad[channels:].contiguous()


def share_gamma_beta_storage(spade) -> None:
    """For inference: the γ and β conv weights become views of one offset-major matrix, the one
    the fast path multiplies with, so that the model holds one copy of them, not two (the tables
    are kept for as long as the weights do not change). They read as before: the same numbers, in
    the state dict, in copies and on the reference path."""
    gamma, beta = spade.mlp_gamma, spade.mlp_beta
    with torch.no_grad():
        matrix = _gamma_beta_matrix(gamma.weight, beta.weight, "offsets")
    channels, hidden = gamma.out_channels, gamma.in_channels
    blocks = matrix.view(3, 3, hidden, 2 * channels)
    gamma.weight = torch.nn.Parameter(blocks[..., :channels].permute(3, 2, 0, 1), gamma.weight.requires_grad)
    beta.weight = torch.nn.Parameter(blocks[..., channels:].permute(3, 2, 0, 1), beta.weight.requires_grad)


def _shared_gamma_beta_matrix(spade) -> torch.Tensor | None:
    """The offset-major matrix that the γ and β weights are views of (:func:`share_gamma_beta_storage`),
    read from their common storage, or None where they are not such views (never shared, or
    replaced since: moved, cast, assigned)."""
    gamma, beta = spade.mlp_gamma.weight, spade.mlp_beta.weight
    channels, hidden = gamma.shape[0], gamma.shape[1]
    # Row o·hidden + i, column j of the matrix is element [j, i, o // 3, o % 3] of [γ | β].
    strides = (1, 2 * channels, 3 * hidden * 2 * channels, hidden * 2 * channels)
    if not (gamma.shape == beta.shape and gamma.dtype == beta.dtype and gamma.stride() == strides
            and beta.stride() == strides
            and gamma.untyped_storage().data_ptr() == beta.untyped_storage().data_ptr()
            and beta.storage_offset() == gamma.storage_offset() + channels):
        return None
    return gamma.detach().as_strided((9 * hidden, 2 * channels), (2 * channels, 1), gamma.storage_offset())


def _product(x: torch.Tensor, matrix: torch.Tensor, mode: str) -> torch.Tensor:
    """"sum" and "patches": x @ matrix; "offsets": W_o · x_u for every offset o and row u of
    x, as the rows o·U + u of a (9·U) × 2C matrix."""
    if mode != "offsets":
        return x @ matrix
    return torch.bmm(x.expand(9, -1, -1), matrix.view(9, x.shape[1], -1)).view(-1, matrix.shape[1])


class _GammaBetaProduct(torch.autograd.Function):
    """The γ|β conv's products with the label network's activations x (N·H·W or U × hidden),
    plus the bias when given, in one of three modes: "sum", x @ Σ_o W_o (one-class windows);
    "offsets", W_o · x_u for each offset (distinct patterns); "patches", the 3×3 patches of x
    gathered at the boundary pixels (``patch_index``) times the offset-major weight. What is
    kept for the backward pass is x and the weights themselves: the rearranged weight matrix
    (as large as the weights, per SPADE layer) and the gathered patches (9·hidden values per
    boundary pixel) are made again there instead."""

    @staticmethod
    def forward(ctx, x, patch_index, gamma_weight, beta_weight, bias, mode, n, h, w):
        operand = x if patch_index is None else _patches(x, patch_index, n, h, w)
        matrix = _gamma_beta_matrix(gamma_weight, beta_weight, "sum" if mode == "sum" else "offsets")
        out = _product(operand, matrix, mode) if bias is None else torch.addmm(bias, operand, matrix)
        ctx.save_for_backward(x, patch_index, gamma_weight, beta_weight)
        ctx.mode, ctx.shape = mode, (n, h, w)
        ctx.dtypes = (x.dtype, gamma_weight.dtype, None if bias is None else bias.dtype, out.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, patch_index, gamma_weight, beta_weight = ctx.saved_tensors
        n, h, w = ctx.shape
        mode, hidden = ctx.mode, x.shape[1]
        layout = "sum" if mode == "sum" else "offsets"
        x_dtype, weight_dtype, bias_dtype, compute = ctx.dtypes  # autocast computed in `compute`
        grad_out = grad_out.to(compute)
        grad_x = grad_gamma = grad_beta = grad_bias = None
        if bias_dtype is not None and ctx.needs_input_grad[4]:
            grad_bias = grad_out.sum(0).to(bias_dtype)
        if mode == "patches" and patch_index.shape[0] < 2 * gamma_weight.shape[0]:
            grad_x, grad_gamma, grad_beta = _patch_product_backward(ctx, grad_out, x, patch_index, gamma_weight,
                                                                   beta_weight, compute)
            return grad_x, None, grad_gamma, grad_beta, grad_bias, None, None, None, None
        if ctx.needs_input_grad[0]:
            matrix = _gamma_beta_matrix(gamma_weight, beta_weight, layout).to(compute)
            if mode == "offsets":  # Σ_o (gradient of the offset-o rows) · W_oᵀ
                per_offset = grad_out.view(9, -1, grad_out.shape[1])
                grad_operand = torch.bmm(per_offset, matrix.view(9, hidden, -1).transpose(1, 2)).sum(0)
            else:
                grad_operand = grad_out @ matrix.t()
            del matrix
            if patch_index is None:
                grad_x = grad_operand.to(x_dtype)
            else:
                grad_padded = grad_operand.new_zeros(n * (h + 2) * (w + 2), hidden)
                grad_padded.index_add_(0, patch_index.reshape(-1), grad_operand.view(-1, hidden))
                del grad_operand
                grad_x = grad_padded.view(n, h + 2, w + 2, hidden)[:, 1:h + 1, 1:w + 1].reshape(-1, hidden)
                grad_x = grad_x.to(x_dtype)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            operand = (x if patch_index is None else _patches(x, patch_index, n, h, w)).to(compute)
            if mode == "offsets":  # block o: xᵀ · (gradient of the offset-o rows), one product per offset
                # (a batched product of the transposed view: torch.matmul would copy the gradient
                # into a transposed layout first)
                per_offset = grad_out.view(9, -1, grad_out.shape[1])
                grad_matrix = torch.bmm(operand.t().expand(9, -1, -1), per_offset).view(9 * hidden, -1)
            else:
                grad_matrix = operand.t() @ grad_out
            del operand
            grad_gamma, grad_beta = _gamma_beta_weight_grads(grad_matrix.to(weight_dtype), layout,
                                                             gamma_weight.shape[0], hidden)
        return grad_x, None, grad_gamma, grad_beta, grad_bias, None, None, None, None


def _patch_product_backward(ctx, grad_out: torch.Tensor, x: torch.Tensor, patch_index: torch.Tensor,
                            gamma_weight: torch.Tensor, beta_weight: torch.Tensor, compute: torch.dtype):
    """The "patches" backward pass in the weights' own layout (C × hidden·9, hidden-major), for
    fewer boundary pixels B than the 2C output channels: the B × 9·hidden patches and their
    gradient are transposed instead of the 2C × 9·hidden weights and theirs, which at the lowest
    resolutions (a few hundred pixels, 1024 channels) are several times larger.
    Returns the gradients of x, the γ weight and the β weight (None where not needed)."""
    n, h, w = ctx.shape
    channels, hidden = gamma_weight.shape[:2]
    boundary = patch_index.shape[0]
    grad_gamma_rows, grad_beta_rows = grad_out[:, :channels], grad_out[:, channels:]
    weights = (gamma_weight.reshape(channels, hidden * 9).to(compute),
               beta_weight.reshape(channels, hidden * 9).to(compute))
    grad_x = grad_gamma = grad_beta = None
    if ctx.needs_input_grad[0]:
        grad_patches = grad_gamma_rows @ weights[0]              # B × (hidden·9), hidden-major
        grad_patches.addmm_(grad_beta_rows, weights[1])
        offset_major = grad_patches.view(boundary, hidden, 9).transpose(1, 2).reshape(-1, hidden)
        grad_padded = grad_patches.new_zeros(n * (h + 2) * (w + 2), hidden)
        grad_padded.index_add_(0, patch_index.reshape(-1), offset_major)
        grad_x = grad_padded.view(n, h + 2, w + 2, hidden)[:, 1:h + 1, 1:w + 1].reshape(-1, hidden).to(x.dtype)
    if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
        patches = _patches(x, patch_index, n, h, w).to(compute)
        hidden_major = patches.view(boundary, 9, hidden).transpose(1, 2).reshape(boundary, hidden * 9)
        grad_gamma = (grad_gamma_rows.t() @ hidden_major).view_as(gamma_weight).to(gamma_weight.dtype)
        grad_beta = (grad_beta_rows.t() @ hidden_major).view_as(beta_weight).to(beta_weight.dtype)
    return grad_x, grad_gamma, grad_beta


def _patches(actv: torch.Tensor, patch_index: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """B × (9·hidden): each boundary pixel's 3×3 neighbourhood of the (N·H·W) × hidden activations,
    offset-major, zeros outside the image."""
    hidden = actv.shape[1]
    padded = F.pad(actv.view(n, h, w, hidden), (0, 0, 1, 1, 1, 1)).reshape(-1, hidden)
    return padded[patch_index].reshape(-1, 9 * hidden)


def gamma_beta_product(x: torch.Tensor, patch_index: torch.Tensor | None, gamma_weight: torch.Tensor,
                       beta_weight: torch.Tensor, bias: torch.Tensor | None, mode: str,
                       n: int, h: int, w: int) -> torch.Tensor:
    """The γ|β conv's products with the activations ``x`` in ``mode`` (see
    :class:`_GammaBetaProduct`; ``patch_index``: B × 9 rows of the padded activation map for
    "patches"), plus ``bias`` if given; differentiable, keeping only x and the weights for the
    backward pass."""
    tensors = (x, gamma_weight, beta_weight) + (() if bias is None else (bias,))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _GammaBetaProduct.apply(x, patch_index, gamma_weight, beta_weight, bias, mode, n, h, w)
    operand = x if patch_index is None else _patches(x, patch_index, n, h, w)
    matrix = _gamma_beta_matrix(gamma_weight, beta_weight, "sum" if mode == "sum" else "offsets")
    return _product(operand, matrix, mode) if bias is None else torch.addmm(bias, operand, matrix)


def _rows_in_place(level: Level, tables: LabelNetworkTables, class_actv: torch.Tensor,
                   rows_: Callable[[torch.Tensor], None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The row tables of :func:`spade_modulate` for inference, the same products as the
    differentiable branch without its concatenations: with the pattern factoring, the K class
    rows and the B boundary rows as the embedding sum returns them (copying them behind the class
    rows cost more than the sum); otherwise one (K + B) × 2C buffer written in place, and None.
    ``class_actv``: mlp_shared's activation of each class's interior (K × hidden); ``rows_``
    turns γ|β rows into ``[s | t]`` rows in place."""
    n, h, w = level.ids.shape
    table, shared_bias, weight_sum, matrix, bias = (tables.table, tables.shared_bias, tables.weight_sum,
                                                    tables.matrix, tables.bias)
    hidden, channels = tables.hidden, tables.channels
    classes = class_actv.shape[0]
    dtype = torch.result_type(class_actv, weight_sum)
    if level.pattern_rep is not None:
        class_rows = torch.addmm(bias, class_actv, weight_sum)
        actv = F.relu(F.embedding_bag(level.pattern_neighbours, table, mode="sum") + shared_bias)
        patterns = actv.shape[0]
        products = torch.empty(patterns * 9 + 1, 2 * channels, dtype=dtype, device=actv.device)
        torch.bmm(actv.expand(9, -1, -1), matrix.view(9, hidden, 2 * channels),
                  out=products[:-1].view(9, patterns, 2 * channels))  # W_o · actv_u, as _product
        products[-1].zero_()  # the empty slot of a pattern bag
        boundary_rows = F.embedding_bag(level.pattern_bag, products, mode="sum")
        boundary_rows += bias
        rows_(class_rows)
        rows_(boundary_rows)
        return class_rows, boundary_rows
    boundary = level.boundary_patch_index.numel() // 9 if level.boundary_index.numel() else 0
    all_rows = torch.empty(classes + boundary, 2 * channels, dtype=dtype, device=class_actv.device)
    torch.addmm(bias, class_actv, weight_sum, out=all_rows[:classes])
    if boundary:
        actv = F.relu(F.embedding_bag(level.neighbour_index, table, mode="sum") + shared_bias)
        torch.addmm(bias, _patches(actv, level.boundary_patch_index, n, h, w), matrix, out=all_rows[classes:])
    rows_(all_rows)
    return all_rows, None


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one flag for CUDA, another for the CPU
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
