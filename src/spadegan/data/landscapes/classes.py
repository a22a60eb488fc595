"""What a procedural landscape can hold: its COCO-Stuff classes, scene kinds, times of day and
seasons, with the odds each is drawn with."""

from __future__ import annotations

from spadegan.palettes import COCO_STUFF


def _class_id(name: str) -> int:
    return COCO_STUFF.names.index(name)


# COCO-Stuff ids (0-based, as our label maps store them), looked up by name.
SKY = _class_id("sky-other")
CLOUDS = _class_id("clouds")
MOUNTAIN = _class_id("mountain")
HILL = _class_id("hill")
ROCK = _class_id("rock")
SEA = _class_id("sea")
RIVER = _class_id("river")
SAND = _class_id("sand")
GRASS = _class_id("grass")
TREE = _class_id("tree")
BUSH = _class_id("bush")
FLOWER = _class_id("flower")
SNOW = _class_id("snow")
DIRT = _class_id("dirt")
FOG = _class_id("fog")

CLASS_IDS: tuple[int, ...] = (SKY, CLOUDS, MOUNTAIN, HILL, ROCK, SEA, RIVER, SAND, GRASS, TREE,
                              BUSH, FLOWER, SNOW, DIRT, FOG)
CLASS_NAMES: dict[int, str] = {i: COCO_STUFF.names[i] for i in CLASS_IDS}
MAX_TREES = 90  # tree instance ids 1..90 stay below the smallest stuff id used (bush, 96)
assert MAX_TREES < min(CLASS_IDS)

SCENE_KINDS = ("coast", "sea", "mountains", "valley", "forest", "meadow", "winter", "dunes")
_SCENE_ODDS = (0.16, 0.08, 0.16, 0.15, 0.13, 0.14, 0.10, 0.08)
TIMES_OF_DAY = ("day", "golden hour", "sunset", "dusk", "overcast")
_TIME_ODDS = (0.42, 0.15, 0.13, 0.08, 0.22)
SEASONS = ("summer", "spring", "autumn", "winter")
_SEASON_ODDS = (0.45, 0.15, 0.25, 0.15)

_GROUND = (GRASS, SNOW, SAND, DIRT, FLOWER)  # where trees, bushes and rocks may stand
