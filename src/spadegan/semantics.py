"""Label maps → the generator's semantic input.

The semantic input is the one-hot encoding of the label map (paper Sec. 3.1, ``m``), with an
optional extra "don't care" channel, followed by an instance boundary map when instance maps
exist (Sec. 4, as in pix2pixHD). :func:`semantic_channels` is the one place where the number of
channels is computed.
"""

from __future__ import annotations

import torch

DONTCARE_ID = 255  # the "unlabeled" id in the official datasets (COCO-Stuff 255; ADE20K 0 is shifted to it)


def semantic_channels(label_nc: int, contain_dontcare_label: bool, use_instance: bool) -> int:
    """Channels of the semantic map: classes, + don't-care, + instance edges."""
    return label_nc + int(contain_dontcare_label) + int(use_instance)


def _as_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    """Accept H×W, N×H×W or N×1×H×W; return N×1×H×W."""
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[:, None]
    if t.dim() == 4 and t.shape[1] == 1:
        return t
    raise ValueError(f"{name} must be H×W, N×H×W or N×1×H×W, got shape {tuple(t.shape)}")


def _id_counts(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ids and their pixel counts. A histogram (one pass) where the ids are small
    non-negative integers, as class ids are; ``torch.unique`` sorts, which costs ~100× more on
    a 256² map on the CPU."""
    flat = ids.flatten()
    if flat.numel() and int(flat.min()) >= 0 and int(flat.max()) < (1 << 16):
        histogram = torch.bincount(flat)
        present = histogram.nonzero().flatten()
        return present, histogram[present]
    return torch.unique(flat, return_counts=True)


def validate_labels(label: torch.Tensor, label_nc: int, contain_dontcare_label: bool,
                    source: str | None = None) -> None:
    """Raise ``ValueError`` naming the offending id, its pixel count and the source file when a
    label map holds an id outside ``[0, label_nc)`` that is not the don't-care id."""
    if label.is_floating_point() and not torch.equal(label, label.round()):
        raise ValueError(f"label map{f' {source}' if source else ''} holds non-integer values; "
                         "expected class ids")
    ids, counts = _id_counts(label.long())
    allowed_dontcare = {label_nc, DONTCARE_ID} if contain_dontcare_label else set()
    for value, count in zip(ids.tolist(), counts.tolist()):
        if 0 <= value < label_nc or value in allowed_dontcare:
            continue
        where = f" in {source}" if source else ""
        hint = (f"; {value} is the don't-care id: enable contain_dontcare_label to accept it"
                if value == DONTCARE_ID else "")
        expected = (f"[0, {label_nc})" + (f" or the don't-care id {DONTCARE_ID}/{label_nc}"
                                          if contain_dontcare_label else ""))
        raise ValueError(f"label id {value} ({count} pixels){where} is outside the model's classes: "
                         f"expected {expected}{hint}")


def one_hot(label: torch.Tensor, label_nc: int, contain_dontcare_label: bool,
            source: str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N×1×H×W class ids → N×(label_nc [+1])×H×W one-hot. Don't-care (255 or ``label_nc``)
    becomes the extra last class channel, as the official preprocessing maps 255 to label_nc."""
    label = _as_batch(label, "label map")
    validate_labels(label, label_nc, contain_dontcare_label, source)
    ids = label.long()
    if contain_dontcare_label:
        ids = torch.where(ids == DONTCARE_ID, torch.full_like(ids, label_nc), ids)
    channels = label_nc + int(contain_dontcare_label)
    out = torch.zeros(ids.shape[0], channels, *ids.shape[2:], dtype=dtype, device=ids.device)
    return out.scatter_(1, ids, 1.0)


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Instance boundary map (pix2pixHD): 1 where a pixel differs from a 4-neighbour, exactly as
    the official ``get_edges`` (both pixels of each differing horizontal/vertical pair)."""
    t = _as_batch(instance, "instance map")
    edge = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    horizontal = t[:, :, :, 1:] != t[:, :, :, :-1]
    vertical = t[:, :, 1:, :] != t[:, :, :-1, :]
    edge[:, :, :, 1:] |= horizontal
    edge[:, :, :, :-1] |= horizontal
    edge[:, :, 1:, :] |= vertical
    edge[:, :, :-1, :] |= vertical
    return edge


def build_semantics(label: torch.Tensor, label_nc: int, contain_dontcare_label: bool,
                    instance: torch.Tensor | None = None, use_instance: bool = False,
                    source: str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The generator / discriminator semantic input: one-hot (+ don't-care), then edges last."""
    semantics = one_hot(label, label_nc, contain_dontcare_label, source, dtype)
    if use_instance:
        if instance is None:
            raise ValueError("this model takes an instance map (it was trained with instance edges); "
                             "pass one, or use the label map itself as instance map")
        edges = instance_edges(instance)
        if edges.shape[0] != semantics.shape[0] or edges.shape[2:] != semantics.shape[2:]:
            raise ValueError(f"instance map shape {tuple(edges.shape)} does not match the label map "
                             f"{tuple(semantics.shape)}{f' ({source})' if source else ''}")
        semantics = torch.cat([semantics, edges.to(dtype)], dim=1)
    expected = semantic_channels(label_nc, contain_dontcare_label, use_instance)
    assert semantics.shape[1] == expected, (semantics.shape, expected)
    return semantics
