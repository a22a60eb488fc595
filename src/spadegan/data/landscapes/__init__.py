"""Procedural landscapes: paired (label map, instance map, photo-like image) samples.

Outdoor scenes in the spirit of the GauGAN demo (Flickr landscapes), labelled with COCO-Stuff
classes (our 0-based ids, see :mod:`spadegan.palettes`), so that a SPADE model or a segmentation
network can be trained without downloading a data set.

A sample is made in two independent steps, each with its own random stream:

1. **Layout** (:func:`generate_layout`, a :class:`SceneLayout`): the label map, the instance map and a few per-pixel
   fields the renderer needs (depth for atmospheric perspective, object-local coordinates for
   shading, a per-object tint). Scenes are composed back to front like a painter: sky, clouds,
   mountain ranges (fractal ridgelines, snow caps above a snow line), hills, the ground (grass,
   sea with a sand beach, snow fields, dunes), rivers and dirt paths in perspective, flower
   patches, a fog band, then trees, bushes and rocks sorted by distance. A scene *kind*
   (coast, open sea, mountains, valley, forest, meadow, winter, dunes) sets the odds of each
   element, so the layouts vary a lot.
2. **Rendering** (:func:`render_layout`) under an *appearance* (:func:`sample_appearance`): time
   of day, season, weather, sun position and a colour grade. Each class has its own texture
   built from shared fractal noise (fBm) fields — wave stripes and sun glints on water, grass
   streaks, foliage clumps, rock cracks, sand ripples, cloud puffs, snow shading — so classes
   differ by texture as well as by colour, and one label map has many valid pictures.

Everything is a pure function of the seed: ``numpy.random.Generator(PCG64(...))`` streams made
from :class:`numpy.random.SeedSequence`, never global state, so the same seed gives
byte-identical arrays on every machine and in every process.

Instance maps follow the COCO-Stuff files (8-bit, see ``coco_stuff_samples/*_inst``): stuff
pixels hold their class id; each tree is an object with its own id 1..90 (below every stuff id
this module uses, so the two never collide).

Sizes are ``(width, height)``, as in PIL and as ``spadegan landscapes --size 512x256``.
"""

from .classes import (CLASS_IDS, CLASS_NAMES, MAX_TREES, SCENE_KINDS, SEASONS, TIMES_OF_DAY,  # noqa: F401
                      BUSH, CLOUDS, DIRT, FLOWER, FOG, GRASS, HILL, MOUNTAIN, RIVER, ROCK, SAND, SEA, SKY,
                      SNOW, TREE)
from .layout import SceneLayout, generate_layout
from .noise import fbm, fbm1d
from .render import render_layout, sample_appearance
from .sample import LandscapeSample, generate_landscape
from .write import (IMAGE_DIR, INSTANCE_DIR, LABEL_DIR, MANIFEST, manifest, prepare_folder, sample_name, sample_paths,
                    write_dataset, write_sample)

__all__ = [
    "CLASS_IDS", "CLASS_NAMES", "IMAGE_DIR", "INSTANCE_DIR", "LABEL_DIR", "LandscapeSample", "MANIFEST", "MAX_TREES",
    "SCENE_KINDS", "SEASONS", "SceneLayout", "TIMES_OF_DAY", "fbm", "fbm1d", "generate_landscape", "generate_layout",
    "manifest", "prepare_folder", "render_layout", "sample_appearance", "sample_name", "sample_paths", "write_dataset",
    "write_sample",
]
