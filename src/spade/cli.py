"""The ``spade`` command line.

Subcommands map flags onto the library; the official option names (``--gpu_ids``,
``--which_epoch``, ``--checkpoints_dir``...) are accepted where they make sense.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__

LABEL_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}


def device_from_gpu_ids(gpu_ids: str | None) -> torch.device:
    """Official ``--gpu_ids``: '-1' for CPU, '0' (or '0,1': the first is used here) for CUDA."""
    if gpu_ids is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = gpu_ids.split(",")[0].strip()
    if int(first) < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit(f"--gpu_ids {gpu_ids}: CUDA is not available here; use --gpu_ids -1 for the CPU")
    return torch.device(f"cuda:{int(first)}")


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders give their label-map files in sorted order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in LABEL_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    if not files:
        raise SystemExit(f"no label maps found in {', '.join(paths)}")
    return files


def match_instances(labels: list[Path], given: list[str] | None) -> list[Path | None]:
    """Instance maps for the label maps: a folder (matched by file name) or files in order."""
    if not given:
        return [None] * len(labels)
    if len(given) == 1 and Path(given[0]).is_dir():
        folder = Path(given[0])
        instances = [folder / label.name for label in labels]
    else:
        instances = [Path(p) for p in given]
        if len(instances) != len(labels):
            raise SystemExit(f"{len(instances)} instance maps for {len(labels)} label maps: give one per "
                             "label map, in the same order, or a folder with the same file names")
    for path in instances:
        if not path.is_file():
            raise SystemExit(f"{path}: no such instance map")
    return instances


def write_gallery(out: Path, rows: list[tuple[str, str, str]]) -> None:
    """An index.html with one row per input: label | output."""
    cells = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td><img src='{html.escape(label)}'></td>"
        f"<td><img src='{html.escape(image)}'></td></tr>" for name, label, image in rows)
    page = ("<!doctype html><meta charset='utf-8'><title>spade synthesize</title>"
            "<style>body{font-family:sans-serif}img{max-width:512px;image-rendering:pixelated}"
            "td{padding:4px;vertical-align:top}</style>"
            f"<table><tr><th>input</th><th>label map</th><th>synthesized</th></tr>\n{cells}</table>\n")
    (out / "index.html").write_text(page)


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .imageio import read_id_map, save_png_atomic
    from .inference import Synthesizer

    synthesizer = Synthesizer.from_checkpoint(args.checkpoint, device=device_from_gpu_ids(args.gpu_ids),
                                              epoch=args.which_epoch)
    labels = expand_inputs(args.labels)
    instances = match_instances(labels, args.instances)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (label, instance) in enumerate(tqdm(list(zip(labels, instances)), desc="synthesize", unit="img")):
        seed = None if args.seed is None else args.seed + index
        try:
            image = synthesizer(label, instance, seed=seed, resize=args.resize)[0]
        except ValueError as error:
            raise SystemExit(str(error)) from None
        name = f"{label.stem}.png"
        save_png_atomic(image, out / name)
        rows.append((label.name, f"labels/{label.stem}.png", name))
        _save_label_preview(read_id_map(label), synthesizer.config.semantics.label_nc,
                            out / "labels" / f"{label.stem}.png")
    write_gallery(out, rows)
    print(f"wrote {len(rows)} images and index.html to {out}")
    return 0


def _save_label_preview(ids: torch.Tensor, label_nc: int, path: Path) -> None:
    """The label map in its data set's colours (by class count: COCO-Stuff, ADE20K, Cityscapes)."""
    from PIL import Image

    from .imageio import save_png_atomic
    from .palettes import palette_for

    mode = {182: "coco", 150: "ade20k", 35: "cityscapes"}.get(label_nc, "custom")
    save_png_atomic(Image.fromarray(palette_for(mode, label_nc).colorize(ids.numpy())), path)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .options import run_config_from_args
    from .training.loop import TrainingDiverged, train

    run = run_config_from_args(args)
    if args.dry_run:
        print(json.dumps(run.to_dict(), indent=2))
        return 0
    device = None if args.gpu_ids is None else device_from_gpu_ids(args.gpu_ids)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun each process takes the GPU of its LOCAL_RANK; --gpu_ids -1 means CPU.
        device = torch.device("cpu") if args.gpu_ids is not None and args.gpu_ids.strip() == "-1" else None
    elif args.gpu_ids is not None and "," in args.gpu_ids:
        print(f"--gpu_ids {args.gpu_ids}: one process uses one GPU; for several, start with torchrun "
              "(see the README)", file=sys.stderr)
    try:
        result = train(run, resume=bool(args.continue_train), device=device, progress=not args.no_progress)
    except (TrainingDiverged, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"spade train: {error}") from None
    except RuntimeError as error:
        if type(error).__name__ == "VGGWeightsMissingError":
            raise SystemExit(f"spade train: {error}") from None
        raise
    print(f"trained to step {result.step}; checkpoint {result.checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import save_official
    from .models import Networks

    if not args.official and not args.onnx and not args.inference:
        raise SystemExit("spade export: say what to write: --official FOLDER, --inference FOLDER and/or --onnx FILE")
    if args.inference:
        from .checkpoint import save_inference_checkpoint

        checkpoint = load_any_checkpoint(args.checkpoint)
        dtype = torch.float16 if args.half else torch.float32
        folder = save_inference_checkpoint(args.inference, checkpoint, use_ema=True, dtype=dtype,
                                           extra={"exported_from": str(checkpoint.folder),
                                                  "step": checkpoint.meta.get("step")})
        print(f"wrote {folder} (the EMA generator where there is one, and the encoder; {dtype})")
    if args.official:
        checkpoint = load_any_checkpoint(args.checkpoint)
        networks = checkpoint.networks
        if args.ema:
            if checkpoint.ema_generator is None:
                raise SystemExit(f"{checkpoint.folder}: has no EMA generator")
            networks = Networks(networks.config, checkpoint.ema_generator, networks.discriminator, networks.encoder)
        save_official(args.official, networks, epoch=args.which_epoch)
        print(f"wrote {args.which_epoch}_net_*.pth and opt.txt to {args.official}")
    if args.onnx:
        from .export import export_onnx
        from .inference import Synthesizer
        from .semantics import build_semantics

        synthesizer = Synthesizer.from_checkpoint(args.checkpoint, device="cpu", epoch=args.which_epoch,
                                                  use_ema=args.ema)
        s, g = synthesizer.config.semantics, synthesizer.config.generator
        height, width = synthesizer.output_size
        labels = torch.zeros(1, 1, height, width, dtype=torch.long)
        semantics = build_semantics(labels, s.label_nc, s.contain_dontcare_label, labels, s.use_instance)
        z = None if g.z_dim is None else torch.zeros(1, g.z_dim)
        export_onnx(synthesizer.networks.generator, args.onnx, semantics, z)
        print(f"wrote {args.onnx} (inputs: semantics {tuple(semantics.shape[1:])} per image"
              f"{'' if z is None else f', z ({g.z_dim},)'}; output: image in [-1, 1])")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .checkpoint import load_official, save_checkpoint

    official = load_official(args.official, epoch=args.which_epoch)
    save_checkpoint(args.out, official.networks, extra={"imported_from": str(args.official)})
    print(f"wrote {args.out}")
    return 0


def cmd_landscapes(args: argparse.Namespace) -> int:
    from .data.landscapes import write_dataset

    size = parse_size(args.size)
    try:
        written = write_dataset(args.out, args.count, size, seed=args.seed, workers=args.workers,
                                overwrite=args.overwrite)
    except ValueError as error:
        raise SystemExit(f"spade landscapes: {error}") from None
    print(f"wrote {written} of {args.count} samples ({size[0]}x{size[1]}) to {args.out}; train with\n"
          f"  spade train --dataset_mode coco --dataroot {args.out} --coco_no_portraits ...  or\n"
          f"  spade train --dataset_mode custom --label_nc 182 --label_dir {args.out}/train_label "
          f"--image_dir {args.out}/train_img --instance_dir {args.out}/train_inst ...")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    """'256' (square) or 'WxH' (e.g. '512x256') → (width, height)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise SystemExit(f"--size {text}: give one number (a square) or WIDTHxHEIGHT, e.g. 512x256")
    width = int(parts[0])
    return width, int(parts[-1])


def load_any_checkpoint(path: str):
    """Our checkpoint folder, or a run folder (its newest checkpoint)."""
    from .checkpoint import is_checkpoint_folder, load_checkpoint
    from .training.loop import CHECKPOINTS, latest_checkpoint

    folder = Path(path)
    if not is_checkpoint_folder(folder):
        newest = latest_checkpoint(folder / CHECKPOINTS) if (folder / CHECKPOINTS).is_dir() else None
        if newest is None:
            raise SystemExit(f"{folder}: neither a checkpoint folder nor a run folder with checkpoints")
        folder = newest
    return load_checkpoint(folder, with_training_state=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spade", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"spade {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synthesize", help="turn label maps into images")
    synth.add_argument("labels", nargs="+", help="label-map PNG files (class ids) or folders of them")
    synth.add_argument("--checkpoint", required=True,
                       help="our checkpoint folder, a training run folder, or an official folder (opt.txt + *_net_G.pth)")
    synth.add_argument("--out", required=True, help="output folder (PNG files and index.html)")
    synth.add_argument("--instances", nargs="+", help="instance maps, one per label map in order, "
                       "or a folder holding them under the label maps' file names")
    synth.add_argument("--which_epoch", default="latest", help="checkpoint epoch to load (official name)")
    synth.add_argument("--gpu_ids", default=None, help="'-1' for CPU, '0' for the first GPU (default: GPU if any)")
    synth.add_argument("--seed", type=int, default=None, help="random style seed (models with an encoder)")
    synth.add_argument("--resize", action="store_true",
                       help="resize label maps (nearest) to the model's size, as the official test preprocessing")
    synth.set_defaults(run=cmd_synthesize)

    from .options import add_train_arguments

    train = commands.add_parser("train", help="train SPADE or pix2pixHD (official option names)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_arguments(train)
    train.set_defaults(run=cmd_train)

    export = commands.add_parser("export", help="write a checkpoint in the official layout, or G as ONNX")
    export.add_argument("checkpoint", help="our checkpoint folder, or a run folder (its newest checkpoint); "
                        "for --onnx also an official folder")
    export.add_argument("--official", help="output folder: {epoch}_net_{G,D,E}.pth + opt.txt")
    export.add_argument("--onnx", help="output file: the generator as ONNX (spectral norm folded, dynamic batch)")
    export.add_argument("--inference", help="output folder: our checkpoint with only what inference needs "
                        "(the EMA generator where there is one, the encoder)")
    export.add_argument("--half", action="store_true", help="with --inference: store the weights in float16")
    export.add_argument("--which_epoch", default="latest")
    export.add_argument("--ema", action="store_true", help="export the EMA generator as G")
    export.set_defaults(run=cmd_export)

    importer = commands.add_parser("import", help="turn an official checkpoint folder into ours")
    importer.add_argument("official", help="official folder: opt.txt + {epoch}_net_G.pth ...")
    importer.add_argument("--out", required=True, help="our checkpoint folder to write")
    importer.add_argument("--which_epoch", default="latest")
    importer.set_defaults(run=cmd_import)

    landscapes = commands.add_parser("landscapes", help="write a procedural landscape data set "
                                     "(COCO-Stuff ids; train_label/, train_inst/, train_img/ PNGs)")
    landscapes.add_argument("--out", required=True, help="output folder (resumed if made with the same seed and size)")
    landscapes.add_argument("--count", type=int, required=True, help="number of samples")
    landscapes.add_argument("--size", default="256", help="256 (square) or WIDTHxHEIGHT, e.g. 512x256")
    landscapes.add_argument("--seed", type=int, default=0, help="data set seed: sample i comes from (seed, i)")
    landscapes.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    landscapes.add_argument("--overwrite", action="store_true", help="delete the samples already in --out first")
    landscapes.set_defaults(run=cmd_landscapes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
