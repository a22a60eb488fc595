"""Label maps → one-hot (+ don't-care) ⊕ instance edges."""

from __future__ import annotations

import pytest
import torch

from spadegan.semantics import DONTCARE_ID, build_semantics, instance_edges, one_hot, semantic_channels


def test_channel_count_is_computed_in_one_place():
    assert semantic_channels(182, True, True) == 184  # COCO-Stuff
    assert semantic_channels(150, True, False) == 151  # ADE20K
    assert semantic_channels(35, False, True) == 36  # Cityscapes


def test_one_hot_and_dontcare():
    label = torch.tensor([[0, 1, 2], [DONTCARE_ID, 3, 3]])
    out = one_hot(label, label_nc=4, contain_dontcare_label=True)
    assert out.shape == (1, 5, 2, 3)
    assert torch.equal(out.sum(1), torch.ones(1, 2, 3))
    assert out[0, 4, 1, 0] == 1  # 255 → the extra last channel
    assert out[0, 2, 0, 2] == 1
    # label_nc itself is the don't-care id too (the official dataset maps 255 to label_nc).
    assert torch.equal(one_hot(torch.tensor([[4]]), 4, True), one_hot(torch.tensor([[255]]), 4, True))


def test_out_of_range_id_names_id_count_and_file():
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0, :3] = 9
    with pytest.raises(ValueError) as error:
        one_hot(label, label_nc=5, contain_dontcare_label=False, source="maps/a.png")
    message = str(error.value)
    assert "9" in message and "3 pixels" in message and "maps/a.png" in message and "[0, 5)" in message


def test_dontcare_without_dontcare_channel_is_an_error():
    with pytest.raises(ValueError, match="255.*contain_dontcare_label"):
        one_hot(torch.full((2, 2), 255), label_nc=5, contain_dontcare_label=False)
    with pytest.raises(ValueError, match="-1"):
        one_hot(torch.full((2, 2), -1), label_nc=5, contain_dontcare_label=True)


def _edges_by_loops(t: torch.Tensor) -> torch.Tensor:
    h, w = t.shape
    edge = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and t[yy, xx] != t[y, x]:
                    edge[y, x] = True
    return edge


def test_instance_edges_are_the_4_neighbour_differences():
    generator = torch.Generator().manual_seed(0)
    instance = torch.randint(0, 3, (9, 11), generator=generator)
    assert torch.equal(instance_edges(instance)[0, 0], _edges_by_loops(instance))


def test_build_semantics_puts_edges_last():
    label = torch.tensor([[0, 0], [1, 1]])
    instance = torch.tensor([[7, 8], [7, 7]])
    sem = build_semantics(label, 2, False, instance, use_instance=True)
    assert sem.shape == (1, 3, 2, 2)
    assert torch.equal(sem[0, 2], torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="instance map"):
        build_semantics(label, 2, False, None, use_instance=True)
