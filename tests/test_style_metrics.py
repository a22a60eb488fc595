"""The style measures on inputs whose answer is known by construction, and the benchmark's
plumbing with stand-in synthesizers (no network)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spadegan.evaluation.protocol import REAL, results_table
from spadegan.evaluation.style import StyleScores, class_colours, following_error, seed_variety, style_following
from spadegan.data.landscapes import MANIFEST
from spadegan.evaluation.style_benchmark import (StyleBenchmark, StyleModel, map_seed_of, perfect_transfer,
                                              run_style_benchmark, style_benchmark_columns, why_no_style_benchmark)

SKY, SEA, GRASS = 156, 154, 123


def random_pairs(count: int, classes=(SKY, SEA, GRASS), seed: int = 0) -> list[dict[int, np.ndarray]]:
    """Reference class colours: a typical colour per class plus a random look per pair."""
    rng = np.random.default_rng(seed)
    typical = {c: rng.uniform(60, 200, 3) for c in classes}
    return [{c: typical[c] + rng.normal(0, 15, 3) for c in classes} for _ in range(count)]


def test_outputs_that_copy_the_references_colours_follow_them_perfectly():
    references = random_pairs(20)
    result = style_following([(r, dict(r)) for r in references])
    assert result.correlation == pytest.approx((1.0, 1.0, 1.0))
    assert result.spread_ratio == pytest.approx(1.0)
    assert result.entries == 20 * 3


def test_outputs_that_ignore_the_reference_score_zero_and_do_not_spread():
    references = random_pairs(20)
    constant = {SKY: np.array([90.0, 140, 230]), SEA: np.array([20.0, 60, 120]), GRASS: np.array([40.0, 160, 40])}
    result = style_following([(r, constant) for r in references])
    assert result.correlation == (0.0, 0.0, 0.0)
    assert result.output_spread == 0.0 and result.spread_ratio == 0.0
    assert result.reference_spread > 0


def test_a_scaled_tint_correlates_fully_and_its_ratio_is_the_scale():
    references = random_pairs(30)
    # each class's own base colour (sky is blue), plus 0.4 of the reference's colour
    base = {SKY: 50.0, SEA: -20.0, GRASS: 10.0}
    result = style_following([(r, {c: base[c] + 0.4 * v for c, v in r.items()}) for r in references])
    assert result.correlation == pytest.approx((1.0, 1.0, 1.0))
    assert result.spread_ratio == pytest.approx(0.4)


def test_an_inverted_tint_correlates_negatively():
    references = random_pairs(10)
    result = style_following([(r, {c: 255 - v for c, v in r.items()}) for r in references])
    assert result.correlation == pytest.approx((-1.0, -1.0, -1.0))


def test_the_typical_colour_of_a_class_does_not_count():
    """Outputs whose classes differ only by the class (sky blue, grass green) and move at random
    otherwise correlate with nothing, though class colours alone would correlate well."""
    references = random_pairs(400, seed=1)
    noise = random_pairs(400, seed=2)   # other random looks around other class colours
    result = style_following(list(zip(references, noise)))
    assert all(abs(r) < 0.15 for r in result.correlation)


def test_only_classes_in_both_the_reference_and_the_output_count():
    references = random_pairs(6)
    outputs = [{SKY: r[SKY]} for r in references]   # the maps hold sky only
    result = style_following(list(zip(references, outputs)))
    assert result.entries == 6 and result.correlation == pytest.approx((1.0, 1.0, 1.0))


def test_references_that_do_not_vary_cannot_measure_anything():
    same = {SKY: np.array([100.0, 150, 200])}
    with pytest.raises(ValueError, match="do not vary"):
        style_following([(same, {SKY: np.array([1.0, 2, 3])}), (same, {SKY: np.array([4.0, 5, 6])})])
    with pytest.raises(ValueError, match="two pairs"):
        style_following([(same, same)])


def test_class_colours_are_means_over_classes_above_the_minimum_size():
    labels = np.zeros((10, 10), np.int64)
    labels[5:] = 1
    labels[0, 0] = 2                                   # 1 pixel: 1% of 100
    image = np.zeros((10, 10, 3), np.uint8)
    image[5:] = (10, 20, 30)
    image[5:, :5] = (30, 40, 50)
    colours = class_colours(image, labels)
    assert set(colours) == {0, 1, 2}
    assert colours[1] == pytest.approx([20, 30, 40])
    assert set(class_colours(image, labels, min_fraction=0.02)) == {0, 1}


def test_the_standard_error_shrinks_with_more_references():
    def grid(references: int, maps: int, seed: int) -> list[list[tuple[dict, dict]]]:
        rng = np.random.default_rng(seed)
        looks = random_pairs(references, seed=seed)
        # outputs: 0.3 of the reference's look, plus noise per pair
        return [[(look, {c: 0.3 * v + rng.normal(0, 10, 3) for c, v in look.items()}) for _ in range(maps)]
                for look in looks]

    copied = [[(look, dict(look)) for _ in range(3)] for look in random_pairs(10)]
    assert following_error(copied) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    few, many = following_error(grid(8, 4, 1)), following_error(grid(64, 4, 2))
    assert all(0 < m < f for f, m in zip(few, many))


def test_seed_variety_is_the_mean_absolute_difference_of_samples():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (8, 8, 3)).astype(np.uint8)
    assert seed_variety([np.stack([image] * 4)]) == 0.0
    assert seed_variety([np.stack([image, image + 7])]) == pytest.approx(7.0)
    # pairs differ by 3, 6 and 3; a second map whose samples differ by 10: (4 + 10) / 2
    assert seed_variety([np.stack([image, image + 3, image + 6]), np.stack([image, image + 10])]) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="at least 2"):
        seed_variety([image[None]])


def test_columns_and_the_fraction_of_the_perfect_transfer():
    references = random_pairs(10)
    perfect = StyleScores(style_following([(r, dict(r)) for r in references]), 20.0)
    half = StyleScores(style_following([(r, {c: 0.5 * v for c, v in r.items()}) for r in references]), 5.0)
    columns = half.columns(perfect)
    assert columns["style_R"] == pytest.approx(1.0) and columns["style_B_of_perfect"] == pytest.approx(1.0)
    assert columns["style_spread_ratio"] == pytest.approx(0.5) and columns["seed_variety"] == 5.0
    assert columns["style_spread"] == pytest.approx(0.5 * columns["style_reference_spread"])
    assert "style_R_of_perfect" not in perfect.columns() and "style_R_stderr" not in columns
    with_error = StyleScores(perfect.following, 20.0, following_error=(0.1, 0.2, 0.3))
    assert with_error.columns()["style_G_stderr"] == 0.2


def test_results_table_shows_the_style_columns_beside_the_others():
    records = [{"method": REAL, "dataset": "d", "mIoU": 0.8, "style_R": 0.77, "style_G": 0.71, "style_B": 0.95,
                "style_spread_ratio": 1.02, "seed_variety": 30.04},
               {"method": "A", "dataset": "d", "mIoU": 0.7, "style_R": 0.294, "style_G": 0.56, "style_B": 0.57,
                "style_spread_ratio": 0.61, "seed_variety": 19.64}]
    lines = results_table(records).splitlines()
    assert lines[0] == ("| method | d mIoU ↑ | d style R ↑ | d style G ↑ | d style B ↑ | d style spread ↑ "
                        "| d seed variety |")
    assert lines[2] == "| A | 70.0 | 0.29 | 0.56 | 0.57 | 0.61 | 19.6 |"


# -- the benchmark's plumbing ---------------------------------------------------------------------

TINY = StyleBenchmark(size=(32, 32), maps=3, references=3, variety_maps=2, samples=2)


def paint_by_class(labels: torch.Tensor, style, seeds) -> torch.Tensor:
    """A stand-in model that ignores style and seed: each class one grey level."""
    return (labels.float() % 7 / 3.5 - 1).expand(-1, 3, -1, -1)


def test_a_model_that_ignores_style_and_seed_scores_zero():
    scores = run_style_benchmark(paint_by_class, TINY, batch_size=2, progress=False)
    assert scores.following.correlation == (0.0, 0.0, 0.0)
    assert scores.following.spread_ratio == 0.0 and scores.seed_variety == 0.0


def test_the_benchmark_passes_one_seed_per_image_whatever_the_batch():
    def calls(batch_size: int) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        seen = {}

        def record(labels, style, seeds):
            for one, seed in zip(labels, seeds):
                assert seed not in seen
                seen[seed] = (one.clone(), None if style is None else style.clone())
            return paint_by_class(labels, style, seeds)

        run_style_benchmark(record, TINY, batch_size=batch_size, progress=False)
        return seen

    a, b = calls(2), calls(5)
    assert sorted(a) == sorted(b) == list(range(3 * 3 + 2 * 2))
    assert all(torch.equal(a[s][0], b[s][0]) for s in a)
    # pair (map i, reference j) has seed j * maps + i: map 0 with references 0 and 1, then the
    # random-style samples (no reference) of maps 0 and 1, two each
    (map_0, reference_0), (map_0_again, reference_1) = a[0], a[3]
    assert torch.equal(map_0, map_0_again) and not torch.equal(reference_0, reference_1)
    assert all(a[s][1] is None for s in range(9, 13)) and torch.equal(a[9][0], a[10][0])


def test_the_perfect_transfer_follows_its_references():
    scores = perfect_transfer(TINY, progress=False)
    assert all(math.isfinite(r) and r > 0.3 for r in scores.following.correlation)
    assert 0.5 < scores.following.spread_ratio < 2 and scores.seed_variety > 0


def test_references_must_have_other_layouts_than_the_maps():
    with pytest.raises(ValueError, match="other layouts"):
        StyleBenchmark(size=(32, 32), map_seed=4, reference_seed=4)


def test_the_maps_come_from_a_landscapes_folders_seed_else_the_default(tmp_path):
    assert map_seed_of(None) == map_seed_of(tmp_path) == StyleBenchmark.map_seed
    assert map_seed_of(tmp_path, default=7) == 7
    (tmp_path / MANIFEST).write_text('{"seed": 9, "count": 6}')
    assert map_seed_of(tmp_path) == map_seed_of(str(tmp_path), default=7) == 9


def test_only_models_with_an_encoder_for_the_landscapes_classes_and_size_take_the_benchmark():
    fit = StyleModel(paint_by_class, has_encoder=True, label_nc=182, output_size=(32, 32))
    assert why_no_style_benchmark(fit, (32, 32)) is None
    assert why_no_style_benchmark(StyleModel(paint_by_class, False, 182, (32, 32)), (32, 32)) == \
        "it has no image encoder and no noise"
    assert why_no_style_benchmark(StyleModel(paint_by_class, False, 182, (32, 32), takes_seed=True), (32, 32)) is None
    assert why_no_style_benchmark(StyleModel(paint_by_class, True, 35, (32, 32)), (32, 32)) == \
        "it takes 35 classes, not the landscapes' COCO-Stuff ids"
    assert why_no_style_benchmark(StyleModel(paint_by_class, True, 182, (32, 64)), (32, 32)) == \
        "it makes 64×32 images, not 32×32"


def test_the_columns_give_the_real_row_the_perfect_transfer_and_skip_unfit_models():
    fit = StyleModel(paint_by_class, has_encoder=True, label_nc=182, output_size=(32, 32))
    plain = StyleModel(paint_by_class, has_encoder=False, label_nc=182, output_size=(32, 32))
    noisy = StyleModel(paint_by_class, has_encoder=False, label_nc=182, output_size=(32, 32), takes_seed=True)
    columns, lines = style_benchmark_columns(TINY, [("fit", fit), ("plain", plain), ("noisy", noisy)], batch_size=4,
                                             progress=False)
    assert list(columns) == [REAL, "fit", "noisy"]
    assert columns["noisy"]["seed_variety"] == 0.0 and "style_R" not in columns["noisy"]
    assert lines[3] == "noisy: no reference picture (no image encoder); seed variety 0.0 levels"
    assert columns[REAL]["style_settings"] == columns["fit"]["style_settings"] == TINY.settings()
    assert "style_R_of_perfect" in columns["fit"] and "style_R_of_perfect" not in columns[REAL]
    assert columns["fit"]["style_R"] == 0.0 and columns["fit"]["seed_variety"] == 0.0
    assert lines[0].startswith("perfect transfer (the real images' row): style following R ")
    assert lines[1].startswith("fit: style following R ") and "of the perfect transfer's" in lines[1]
    assert lines[2] == "plain: no style benchmark: it has no image encoder and no noise"
