"""The ``spadegan`` command line.

Subcommands map flags onto the library; the official option names (``--gpu_ids``,
``--which_epoch``, ``--checkpoints_dir``...) are accepted where they make sense.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import __version__
from .memory import allocator_in_use, keep_freed_memory
from .synthesize import MAX_INPUT_PIXELS

if TYPE_CHECKING:
    from .config import DataConfig


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


def synthesis_size(values: list[str] | None) -> tuple[int, int] | None:
    """``--size N`` (N×N) or ``--size WIDTHxHEIGHT``, as ``spadegan landscapes`` takes it →
    (height, width). The former two-number form ``--size HEIGHT WIDTH`` is still read."""
    if not values:
        return None
    try:
        if len(values) == 1:
            width, height = parse_size(values[0])
        elif len(values) == 2:
            height, width = int(values[0]), int(values[1])
        else:
            raise ValueError
    except ValueError:
        raise SystemExit(f"--size {' '.join(values)}: give N (a square) or WIDTHxHEIGHT, e.g. 512x256") from None
    if min(height, width) < 1:
        raise SystemExit(f"--size {' '.join(values)}: the sides must be positive")
    return height, width


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .synthesize import SynthesisRequest, synthesize_files

    request = SynthesisRequest(
        checkpoint=args.checkpoint, labels=args.labels, out=args.out, instances=args.instances,
        style=args.style, seed=args.seed, samples=args.samples, size=synthesis_size(args.size),
        resize=args.resize, batch_size=args.batch_size, max_pixels=args.max_pixels, epoch=args.which_epoch,
        precision=args.precision, device=device_from_gpu_ids(args.gpu_ids), reroll=args.reroll,
        reroll_seed=args.reroll_seed)
    try:
        count = synthesize_files(request)
    except (ValueError, FileNotFoundError) as error:  # bad input or model: a message, no traceback
        raise SystemExit(f"spadegan synthesize: {error}") from None
    except OSError as error:  # writing failed (a full disk...): nothing was published
        raise SystemExit(f"spadegan synthesize: {error}; nothing was written to {args.out}") from None
    print(f"wrote {count} images and index.html to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .nn.vgg import VGGWeightsMissingError
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
              "(see docs/training.md)", file=sys.stderr)
    try:
        result = train(run, resume=bool(args.continue_train), device=device, progress=not args.no_progress)
    except (TrainingDiverged, VGGWeightsMissingError, ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"spadegan train: {error}") from None
    print(f"trained to step {result.step}; checkpoint {result.checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import save_official
    from .models import Networks

    if not args.official and not args.onnx and not args.inference:
        raise SystemExit("spadegan export: say what to write: --official FOLDER, --inference FOLDER and/or --onnx FILE")
    if args.inference:
        from .checkpoint import save_inference_checkpoint

        checkpoint = load_any_checkpoint(args.checkpoint)
        dtype = torch.float16 if args.half else torch.float32
        folder = save_inference_checkpoint(args.inference, checkpoint, use_ema=not args.no_ema, dtype=dtype,
                                           extra={**{k: checkpoint.meta[k] for k in ("palette", "palette_name")
                                                     if k in checkpoint.meta},
                                                  "exported_from": str(checkpoint.folder),
                                                  "step": checkpoint.meta.get("step"),
                                                  "generator": "trained" if args.no_ema else "ema"})
        which = "the trained generator (not its EMA)" if args.no_ema else "the EMA generator where there is one"
        print(f"wrote {folder} ({which}, and the encoder; {dtype})")
    if args.official:
        checkpoint = load_any_checkpoint(args.checkpoint)
        networks = checkpoint.networks
        if not args.no_ema and checkpoint.ema_generator is not None:
            networks = Networks(networks.config, checkpoint.ema_generator, networks.discriminator, networks.encoder)
        save_official(args.official, networks, epoch=args.which_epoch)
        which = "the trained generator" if args.no_ema or checkpoint.ema_generator is None else "the EMA generator"
        print(f"wrote {args.which_epoch}_net_*.pth and opt.txt to {args.official} (G: {which})")
    if args.onnx:
        from .export import export_onnx
        from .inference import Synthesizer
        from .semantics import build_semantics

        synthesizer = Synthesizer.from_checkpoint(args.checkpoint, device="cpu", epoch=args.which_epoch,
                                                  use_ema=not args.no_ema)
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
    from .official_oasis import load_official_oasis

    try:
        if (Path(args.official) / "models").is_dir():  # OASIS: models/{iter}_G.pth
            oasis = load_official_oasis(args.official, args.which_epoch, args.crop_size, args.aspect_ratio)
            networks, ema = oasis.networks, oasis.ema_generator
        else:
            networks, ema = load_official(args.official, epoch=args.which_epoch).networks, None
        save_checkpoint(args.out, networks, ema_generator=ema, extra={"imported_from": str(args.official)})
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"spadegan import: {error}") from None
    print(f"wrote {args.out}")
    return 0


def cmd_landscapes(args: argparse.Namespace) -> int:
    from .data.landscapes import write_dataset

    size = parse_size(args.size)
    try:
        written = write_dataset(args.out, args.count, size, seed=args.seed, workers=args.workers,
                                overwrite=args.overwrite)
    except ValueError as error:
        raise SystemExit(f"spadegan landscapes: {error}") from None
    print(f"wrote {written} of {args.count} samples ({size[0]}x{size[1]}) to {args.out}; train with\n"
          f"  spadegan train --dataset_mode coco --dataroot {args.out} --coco_no_portraits ...  or\n"
          f"  spadegan train --dataset_mode custom --label_nc 182 --label_dir {args.out}/train_label "
          f"--image_dir {args.out}/train_img --instance_dir {args.out}/train_inst ...")
    return 0


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .evaluation.pseudo_label import PseudoLabelError, pseudo_label
    from .evaluation.segmenters import dataset_label_nc, get_segmenter

    try:
        segmenter = get_segmenter(args.segmenter, weights=args.weights, device=device_from_gpu_ids(args.gpu_ids))
    except (KeyError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"spadegan pseudo-label: {error}") from None
    try:
        result = pseudo_label(args.photos, segmenter, args.out, size=args.size, square=args.square,
                              recursive=args.recursive, batch_size=args.batch_size, overwrite=args.overwrite,
                              weights=args.weights)
    except PseudoLabelError as error:
        raise SystemExit(f"spadegan pseudo-label: {error}") from None
    label_nc = dataset_label_nc(segmenter)
    print(f"wrote {len(result.written)} samples ({len(result.skipped)} already there) to {args.out}; train with\n"
          f"  spadegan train --dataset_mode custom --label_nc {label_nc} --no_instance "
          f"--label_dir {result.label_dir} --image_dir {result.image_dir} ...")
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
    from .checkpoint import is_checkpoint_folder, load_checkpoint, resolve_checkpoint

    try:
        folder = resolve_checkpoint(path)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if not is_checkpoint_folder(folder):
        raise SystemExit(f"{folder}: neither a checkpoint folder nor a run folder with checkpoints")
    return load_checkpoint(folder, with_training_state=False)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvaluationRequest, evaluate_checkpoints
    from .evaluation.protocol import load_results, results_table

    request = EvaluationRequest(
        checkpoints=args.checkpoint, out=args.out, names=args.name or [], dataroot=args.dataroot,
        label_dir=args.label_dir, image_dir=args.image_dir, dataset_name=args.dataset_name,
        max_images=args.max_images, segmenter=args.segmenter, segmenter_weights=args.segmenter_weights,
        results=args.results, fid_weights=args.fid_weights, no_fid=args.no_fid, style=args.style, seed=args.seed,
        batch_size=args.batch_size, keep=args.keep, style_metrics=args.style_metrics, style_maps=args.style_maps,
        style_references=args.style_references, style_map_seed=args.style_map_seed,
        style_reference_seed=args.style_reference_seed, style_variety_maps=args.style_variety_maps,
        style_samples=args.style_samples, progress=not args.no_progress, device=device_from_gpu_ids(args.gpu_ids))
    try:
        report = evaluate_checkpoints(request)
    except (ValueError, FileNotFoundError) as error:  # bad input or model: a message, no traceback
        raise SystemExit(f"spadegan evaluate: {error}") from None
    print(results_table(load_results(report.results)))
    for line in report.style_lines:
        print(line)
    print(f"{len(report.records)} rows appended to {report.results}; samples in {Path(args.out) / 'index.html'}")
    return 0


def dataset_config(args: argparse.Namespace) -> DataConfig:
    """The DataConfig ``spadegan dataset`` reads: ``--label_dir`` / ``--image_dir`` (custom), or a
    folder in a named layout, or (``--dataset_mode auto``) the layout the folder has: Cityscapes
    (gtFine/), ADE20K (annotations/), else {phase}_label + {phase}_img folders as custom."""
    from .config import DataConfig

    if args.label_dir or args.image_dir:
        if not (args.label_dir and args.image_dir):
            raise SystemExit("spadegan dataset: give both --label_dir and --image_dir")
        return DataConfig(dataset_mode="custom", label_dir=args.label_dir, image_dir=args.image_dir,
                          instance_dir=args.instance_dir, use_instance=args.instance_dir is not None,
                          label_nc=2 ** 31 - 1, max_dataset_size=args.max_images)
    if not args.folder:
        raise SystemExit("spadegan dataset: give a data set folder, or --label_dir and --image_dir")
    root, mode = Path(args.folder), args.dataset_mode
    if not root.is_dir():
        raise SystemExit(f"spadegan dataset: {root}: no such folder")
    if mode == "auto":
        mode = ("cityscapes" if (root / "gtFine").is_dir() else "ade20k" if (root / "annotations").is_dir()
                else "custom")
    if mode == "custom":
        labels, images, instances = (root / f"{args.phase}_{kind}" for kind in ("label", "img", "inst"))
        if not (labels.is_dir() and images.is_dir()):
            raise SystemExit(f"spadegan dataset: {root} has no {labels.name}/ and {images.name}/ folders: give "
                             "--dataset_mode, or --label_dir and --image_dir")
        return DataConfig(dataset_mode="custom", label_dir=str(labels), image_dir=str(images),
                          instance_dir=str(instances) if instances.is_dir() else None,
                          use_instance=instances.is_dir(), label_nc=2 ** 31 - 1, max_dataset_size=args.max_images)
    instances = {"coco": root / f"{args.phase}_inst", "cityscapes": root / "gtFine", "ade20k": None}[mode]
    return DataConfig(dataset_mode=mode, dataroot=str(root), phase=args.phase, is_train=args.phase == "train",
                      use_instance=instances is not None and instances.is_dir(), label_nc=2 ** 31 - 1,
                      max_dataset_size=args.max_images)


def cmd_dataset_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import LAYOUT_LABEL_NC, format_report, inspect_dataset, why_nothing_fits
    from .palettes import palette_for

    config = dataset_config(args)
    report = inspect_dataset(config, progress=not args.no_progress)
    names = None
    if config.dataset_mode in LAYOUT_LABEL_NC:
        names = dict(enumerate(palette_for(config.dataset_mode, LAYOUT_LABEL_NC[config.dataset_mode]).names))
    text = format_report(report, names)
    where = (f" --label_dir {config.label_dir} --image_dir {config.image_dir}"
             + (f" --instance_dir {config.instance_dir}" if config.use_instance else "")
             if config.dataset_mode == "custom" else f" --dataroot {config.dataroot}")
    print(text.replace(" ...", where + " ..."))
    return 0 if why_nothing_fits(report) is None else 1


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from .data.convert import ConvertError, convert_masks
    from .palettes import known_palette, parse_color, read_palette_file

    try:
        if known_palette(args.palette) is not None:
            palette = known_palette(args.palette)
            dontcare = (0, 0, 0) if palette.dontcare_id is not None else None  # black: unlabeled there
        else:
            palette, dontcare = read_palette_file(args.palette), None
        if args.dontcare_color is not None:
            dontcare = parse_color(args.dontcare_color, "--dontcare_color")
        result = convert_masks(args.masks, args.images, palette, args.out, dontcare=dontcare,
                               max_distance=args.max_distance, progress=not args.no_progress)
    except (ConvertError, ValueError) as error:
        raise SystemExit(f"spadegan dataset convert: {error}; nothing was written") from None
    mapped = f" ({result.approximated_pixels} pixels mapped to the nearest colour)" if result.approximated_pixels else ""
    print(f"wrote {result.pairs} pairs and palette.json ({len(palette)} classes) to {result.out}{mapped}; next:\n"
          f"  spadegan dataset inspect {result.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import Limits, serve
    except ImportError as error:
        raise SystemExit(f"spadegan serve: {error}; install the web demo's dependencies (fastapi, uvicorn, "
                         "python-multipart)") from None
    from .bundled import BundledModelMissingError

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                    max_decoding=args.max_decoding, max_batch=args.max_batch, max_waiting=args.max_waiting)
    if min(limits.max_upload_bytes, limits.max_pixels, limits.max_decoding, limits.max_batch, limits.max_waiting) < 1:
        raise SystemExit("spadegan serve: --max_upload_mb, --max_pixels, --max_decoding, --max_batch and "
                         "--max_waiting must be positive")
    try:
        serve(args.checkpoint, host=args.host, port=args.port, device=device_from_gpu_ids(args.gpu_ids),
              limits=limits, extra_presets=args.preset or (), background=args.background,
              precision=args.precision, allowed_hosts=args.allowed_hosts)
    except (BundledModelMissingError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"spadegan serve: {error}") from None
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .serve.study import StudyStore

    if args.report:
        if not Path(args.db).is_file():
            raise SystemExit(f"spadegan study: {args.db}: no such file (no votes recorded there)")
        report = StudyStore(args.db).report(args.name_a, args.name_b)
        print(json.dumps(report.as_dict()) if args.json else report.text())
        return 0
    if not (args.a and args.b and args.labels):
        raise SystemExit("spadegan study: give --a, --b and --labels (folders of images and label maps matched by "
                         "file name), or --report")
    from .serve.study import run_study

    try:
        run_study(args.a, args.b, args.labels, args.db, name_a=args.name_a or Path(args.a).name,
                  name_b=args.name_b or Path(args.b).name, host=args.host, port=args.port, palette=args.palette,
                  allowed_hosts=tuple(args.allowed_hosts))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"spadegan study: {error}") from None
    return 0


def add_allowed_hosts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allowed_hosts", "--allowed-hosts", nargs="+", default=[], metavar="NAME",
                        help="Host names to answer besides this machine's (localhost, 127.0.0.1, [::1]), --host and "
                        "IP addresses; '*' answers any (other names are refused: a guard against DNS rebinding)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spadegan", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version",
                        version=f"spadegan {__version__} (torch {torch.__version__}, allocator: {allocator_in_use()})")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synthesize", help="turn label maps into images",
                                description="Label maps in, pictures out: PNGs and an index.html gallery in --out.")
    synth.add_argument("labels", nargs="+", help="label-map PNG files or folders of them: class ids (grayscale, "
                       "palette-index or 16-bit PNG) or the model's palette colours (RGB PNG)")
    synth.add_argument("--checkpoint", default=None,
                       help="our checkpoint folder, a training run folder, or an official folder (opt.txt + "
                       "*_net_G.pth); default: the model bundled with the package")
    synth.add_argument("--out", required=True, help="output folder (PNG files and index.html)")
    synth.add_argument("--instances", nargs="+", help="instance maps, one per label map in order, "
                       "or a folder holding them under the label maps' file names")
    synth.add_argument("--style", help="a reference image whose style the image encoder reads, for every input "
                       "(paper Fig. 1; models with an encoder)")
    synth.add_argument("--seed", type=int, default=None,
                       help="random style seed S, 0 <= S < 2**63 (models with an encoder; default: a random "
                       "one, printed)")
    synth.add_argument("--samples", type=int, default=1, metavar="K",
                       help="K images of each label map with seeds S, S+1, ... (Fig. 9), named NAME_s{k}.png")
    sizing = synth.add_mutually_exclusive_group()
    sizing.add_argument("--size", nargs="+", metavar="N|WxH",
                        help="N or WIDTHxHEIGHT, e.g. 512x256: resize label maps (nearest) to it first; the "
                        "network must make that size (a SPADE generator makes its own size only)")
    sizing.add_argument("--resize", action="store_true",
                        help="resize label maps (nearest) to the model's size, as the official test preprocessing")
    synth.add_argument("--batch_size", type=int, default=1, help="images per forward pass")
    synth.add_argument("--reroll", metavar="MASK.png",
                       help="re-roll one region: the picture of --seed with the mask's region (its non-zero pixels; "
                       "the label map's size) painted anew, the rest unchanged (OASIS: new noise in the region; "
                       "SPADE with the image encoder: a new style code, taken in the region only)")
    synth.add_argument("--reroll_seed", type=int, default=None, metavar="T",
                       help="the region's new look (sample k: T + k; default: a new one, printed)")
    synth.add_argument("--max_pixels", type=int, default=MAX_INPUT_PIXELS, metavar="N",
                       help="refuse input images of more than N pixels, read from their headers before decoding "
                       "(default: %(default)s = 4096², about a GiB to decode and resize a colour label map)")
    synth.add_argument("--which_epoch", default="latest", help="checkpoint epoch to load (official name)")
    synth.add_argument("--gpu_ids", default=None, help="'-1' for CPU, '0' for the first GPU (default: GPU if any)")
    synth.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                       help="bf16: convolutions in bfloat16, several times faster on CPUs with AMX and on "
                            "GPUs; not exact (pixels move by about 1/255); default fp32, the exact computation")
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
    export.add_argument("--no_ema", action="store_true",
                        help="the trained generator instead of its EMA average (default: the EMA generator where "
                        "the checkpoint has one, as synthesize and serve use), for every output")
    export.add_argument("--which_epoch", default="latest")
    export.add_argument("--ema", action="store_true", help=argparse.SUPPRESS)  # the default now; still accepted
    export.set_defaults(run=cmd_export)

    evaluate = commands.add_parser("evaluate", help="the paper's protocol: mIoU / accuracy of a segmenter on "
                                   "synthesized images, FID, against the real-image upper bound")
    evaluate.add_argument("--checkpoint", nargs="+", default=[], help="checkpoints to score (ours, run or official "
                          "folders); the real images are always scored too")
    evaluate.add_argument("--name", nargs="+", help="a table name per checkpoint (default: folder names)")
    evaluate.add_argument("--dataroot", help="a data set folder with val_label/val_img (or test_, train_) folders, "
                          "as spadegan landscapes writes")
    evaluate.add_argument("--label_dir", help="label maps (class ids), instead of --dataroot")
    evaluate.add_argument("--image_dir", help="the matching real photos, instead of --dataroot")
    evaluate.add_argument("--dataset_name", default="landscapes", help="the data set's column in the table")
    evaluate.add_argument("--segmenter", default="landscapes", help="a registered segmenter name")
    evaluate.add_argument("--segmenter_weights", help="its weight file (the bundled one by default where there is one)")
    evaluate.add_argument("--fid_weights", help="pt_inception-2015-12-05-6726825d.pth (or set SPADE_FID_WEIGHTS, "
                          "or put it in the torch hub cache); without it FID is left out")
    evaluate.add_argument("--no_fid", action="store_true", help="skip FID even if the weights are found")
    evaluate.add_argument("--style", choices=["random", "photo"], default="random",
                          help="models with an encoder: a random style per image (seeded), or each real photo's")
    evaluate.add_argument("--seed", type=int, default=0, help="image i gets style seed SEED + i")
    evaluate.add_argument("--out", required=True, help="folder for index.html, sample images and results.jsonl")
    evaluate.add_argument("--results", help="jsonl file to append to (default OUT/results.jsonl)")
    evaluate.add_argument("--batch_size", type=int, default=8)
    evaluate.add_argument("--max_images", type=int, default=9223372036854775807, help="score the first N only")
    evaluate.add_argument("--keep", type=int, default=8, help="samples shown in index.html")
    evaluate.add_argument("--gpu_ids", default=None, help="'-1' for CPU, '0' for the first GPU (default: GPU if any)")
    evaluate.add_argument("--no_progress", action="store_true")
    from .evaluation.style_benchmark import StyleBenchmark as Style

    style = evaluate.add_argument_group("style benchmark", "held-out landscape maps synthesized in the style of "
                                        "reference landscapes of other layouts, scored by how their class colours "
                                        "follow the references' (docs/style_benchmark.md)")
    style.add_argument("--style_metrics", action="store_true", help="also run the style benchmark on the models "
                       "with an image encoder; the real images' row gets the perfect transfer's scores")
    style.add_argument("--style_maps", type=int, metavar="N", default=Style.maps,
                       help="maps synthesized in every reference's style (default: %(default)s)")
    style.add_argument("--style_references", type=int, metavar="N", default=Style.references,
                       help="reference pictures (default: %(default)s)")
    style.add_argument("--style_variety_maps", type=int, metavar="N", default=Style.variety_maps,
                       help="maps sampled for seed variety (default: %(default)s)")
    style.add_argument("--style_samples", type=int, metavar="K", default=Style.samples,
                       help="random-style samples of each of those maps (default: %(default)s)")
    style.add_argument("--style_map_seed", type=int, metavar="SEED", default=None, help="maps: landscapes (SEED, "
                       f"i) (default: the seed of a landscapes --dataroot, else {Style.map_seed})")
    style.add_argument("--style_reference_seed", type=int, metavar="SEED", default=Style.reference_seed,
                       help="references: landscapes (SEED, j) (default: %(default)s)")
    evaluate.set_defaults(run=cmd_evaluate)

    importer = commands.add_parser("import", help="turn an official checkpoint folder into ours")
    importer.add_argument("official", help="official folder: SPADE (opt.txt + {epoch}_net_G.pth ...) or OASIS "
                          "(opt.txt + models/{iter}_G.pth ...)")
    importer.add_argument("--out", required=True, help="our checkpoint folder to write")
    importer.add_argument("--which_epoch", default="latest", help="the epoch (SPADE) or iteration (OASIS) to read")
    importer.add_argument("--crop_size", type=int, default=None,
                          help="OASIS: the picture width the generator was trained at (its opt.txt does not say; "
                          "default: its data set's: ade20k and coco 256, cityscapes 512)")
    importer.add_argument("--aspect_ratio", type=float, default=None, help="OASIS: width / height (default: its data set's)")
    importer.set_defaults(run=cmd_import)

    dataset = commands.add_parser("dataset", help="look into a data set: what it holds and the training options "
                                  "that fit it")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    inspect = dataset_commands.add_parser("inspect", help="report pairs, sizes, classes and their pixel shares, "
                                          "don't-care, instance maps and problem files; print the spadegan train "
                                          "options that fit (exit status 1 where none does)")
    inspect.add_argument("folder", nargs="?", help="the data set's folder (see --dataset_mode)")
    inspect.add_argument("--dataset_mode", choices=["auto", "custom", "coco", "ade20k", "cityscapes"], default="auto",
                         help="the folder's layout; auto: Cityscapes (gtFine/), ADE20K (annotations/), else "
                         "PHASE_label/ and PHASE_img/ (and PHASE_inst/) as a custom data set")
    inspect.add_argument("--label_dir", help="label maps (custom layout), instead of a folder")
    inspect.add_argument("--image_dir", help="photos (custom layout)")
    inspect.add_argument("--instance_dir", help="instance maps (custom layout, optional)")
    inspect.add_argument("--phase", default="train", help="train or val (test reads val, as the official code)")
    inspect.add_argument("--max_images", type=int, default=9223372036854775807, help="inspect the first N pairs only")
    inspect.add_argument("--no_progress", action="store_true")
    inspect.set_defaults(run=cmd_dataset_inspect)

    convert = dataset_commands.add_parser("convert", help="colour-coded masks from a labelling tool → a data set of "
                                          "class-id maps with its palette (train_label/, train_img/, palette.json)")
    convert.add_argument("--masks", required=True, help="folder of colour masks (PNG), named as the photos")
    convert.add_argument("--images", required=True, help="folder of the photos")
    convert.add_argument("--palette", required=True, help="the classes' colours: a file (JSON [{name, color}] or "
                         "{name: color}; text 'r g b name' lines or CVAT's labelmap.txt), or coco, ade20k, cityscapes")
    convert.add_argument("--out", required=True, help="the new data set's folder (must not exist)")
    convert.add_argument("--dontcare_color", help="R,G,B of unlabeled pixels, written as don't-care (255); "
                         "coco and ade20k: black")
    convert.add_argument("--max_distance", type=float, help="map a colour not in the palette to the nearest one "
                         "within this RGB distance (for anti-aliased edges; default: no guessing)")
    convert.add_argument("--no_progress", action="store_true")
    convert.set_defaults(run=cmd_dataset_convert)

    landscapes = commands.add_parser("landscapes", help="write a procedural landscape data set "
                                     "(COCO-Stuff ids; train_label/, train_inst/, train_img/ PNGs)")
    landscapes.add_argument("--out", required=True, help="output folder (resumed if made with the same seed and size)")
    landscapes.add_argument("--count", type=int, required=True, help="number of samples")
    landscapes.add_argument("--size", default="256", help="256 (square) or WIDTHxHEIGHT, e.g. 512x256")
    landscapes.add_argument("--seed", type=int, default=0, help="data set seed: sample i comes from (seed, i)")
    landscapes.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    landscapes.add_argument("--overwrite", action="store_true", help="delete the samples already in --out first")
    landscapes.set_defaults(run=cmd_landscapes)

    pseudo = commands.add_parser("pseudo-label", help="label unlabeled photos with a segmenter and write a "
                                 "training set (train_label/, train_img/ PNGs), as the paper did for Flickr landscapes")
    pseudo.add_argument("photos", help="a folder of photos (or one photo)")
    pseudo.add_argument("--segmenter", default="landscapes",
                        help="registered segmenter: landscapes (shipped), drn-d-105, deeplabv2, upernet-101")
    pseudo.add_argument("--weights", default=None, help="weights file or folder (default: the segmenter's own, if any)")
    pseudo.add_argument("--out", required=True, help="output folder")
    pseudo.add_argument("--size", type=int, default=None,
                        help="resize each photo so its shorter side is SIZE before segmenting (default: as it is)")
    pseudo.add_argument("--square", action="store_true", help="with --size: centre-crop to SIZE x SIZE")
    pseudo.add_argument("--recursive", action="store_true", help="also take photos in subfolders")
    pseudo.add_argument("--batch_size", type=int, default=1, help="photos segmented together (same size only)")
    pseudo.add_argument("--overwrite", action="store_true", help="redo photos already written")
    pseudo.add_argument("--gpu_ids", default=None, help="'-1' for CPU, '0' for the first GPU (default: GPU if any)")
    pseudo.set_defaults(run=cmd_pseudo_label)

    serve = commands.add_parser("serve", help="the GauGAN-style web demo: paint a label map, get a picture "
                                "(API docs at /docs)")
    serve.add_argument("--checkpoint", default=None, help="checkpoint, run or official folder "
                       "(default: the bundled model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    add_allowed_hosts_argument(serve)
    serve.add_argument("--gpu_ids", default=None, help="'-1' for CPU, '0' for the first GPU (default: GPU if any)")
    serve.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                       help="bf16: convolutions in bfloat16, faster on CPUs with AMX and on GPUs, not exact")
    serve.add_argument("--preset", action="append", metavar="IMAGE", help="add a style preset (repeatable)")
    serve.add_argument("--background", default=None, help="class the canvas starts with and the eraser paints "
                       "(name or id; default: sky)")
    serve.add_argument("--max_upload_mb", type=float, default=8.0, help="largest upload per file (default: 8)")
    serve.add_argument("--max_pixels", type=int, default=2048 * 2048, help="largest uploaded image in pixels")
    serve.add_argument("--max_decoding", type=int, default=2, help="uploads decoded at once; each may hold "
                       "up to max_upload_mb + 64 bytes per pixel while it is decoded (default: 2)")
    serve.add_argument("--max_batch", type=int, default=4, help="requests synthesized together (default: 4)")
    serve.add_argument("--max_waiting", type=int, default=32, help="queued requests, and uploads waiting to be "
                       "decoded, before 503 (default: 32)")
    serve.set_defaults(run=cmd_serve)

    study = commands.add_parser("study", help="a preference study between two methods' images of the same label "
                                "maps (the paper's Table 2 protocol); --report for the result")
    study.add_argument("--a", help="folder of method A's images (matched to the label maps by file name)")
    study.add_argument("--b", help="folder of method B's images")
    study.add_argument("--labels", help="folder of the label maps")
    study.add_argument("--db", default="votes.sqlite", help="SQLite file of the trials and votes (default: votes.sqlite)")
    study.add_argument("--name_a", default=None, help="method A's name in the report (default: its folder's name)")
    study.add_argument("--name_b", default=None, help="method B's name in the report")
    study.add_argument("--palette", default="coco", help="palette for label maps stored as ids: coco, ade20k, "
                       "cityscapes (default: coco)")
    study.add_argument("--host", default="127.0.0.1")
    study.add_argument("--port", type=int, default=8001)
    add_allowed_hosts_argument(study)
    study.add_argument("--report", action="store_true", help="print the preference for A with its 95%% Wilson "
                       "interval and exit")
    study.add_argument("--json", action="store_true", help="with --report: as JSON")
    study.set_defaults(run=cmd_study)
    return parser


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every long option also answers to its other spelling, ``--max_batch`` to ``--max-batch``
    and the reverse, in ``parser`` and its subcommands. The names shown are the official
    underscore ones (users arrive with the official README's command lines); the other spelling is
    accepted and not listed."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in {id(p): p for p in action.choices.values()}.values():
                accept_both_spellings(command)
            continue
        for option in list(action.option_strings):
            name = option[2:]
            if not option.startswith("--") or ("_" in name) == ("-" in name):
                continue
            other = "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))
            parser._option_string_actions.setdefault(other, action)
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # first: --version reports it
    args = accept_both_spellings(build_parser()).parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
