"""Official checkpoint folders: opt.txt both ways, weights both ways, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import spadegan.checkpoint as checkpoint_module
from spadegan.atomic import atomic_write
from spadegan.checkpoint import load_checkpoint, load_official, save_checkpoint, save_official
from spadegan.config import (OFFICIAL_DEFAULTS, GeneratorConfig, ModelConfig, SemanticsConfig, model_config_from_options,
                          read_opt_txt, write_opt_txt)
from spadegan.models import build_networks
from spadegan.nn.fast_spade import share_gamma_beta_storage
from spadegan.nn.spade import SPADE
from spadegan.semantics import build_semantics

from conftest import FIXTURE_NAMES, OFFICIAL, official_fixture, require_official


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_opt_txt_reads_every_recorded_option(name):
    fx = official_fixture(name)
    options = read_opt_txt(OFFICIAL / f"{name}_checkpoint" / "opt.txt")
    recorded = {k: v for k, v in fx["options"].items() if k not in ("semantic_nc", "gpu_ids")}
    for key, value in recorded.items():
        assert options[key] == value, key
        assert type(options[key]) is type(value), key


def test_opt_txt_round_trip(tmp_path):
    require_official()
    options = read_opt_txt(OFFICIAL / "ade20k_vae_more_checkpoint" / "opt.txt")
    write_opt_txt(tmp_path / "opt.txt", options)
    assert read_opt_txt(tmp_path / "opt.txt") == options
    label_line = next(line for line in (tmp_path / "opt.txt").read_text().splitlines() if "label_nc:" in line)
    assert label_line == f"{'label_nc':>25}: {'150':<30}\t[default: {OFFICIAL_DEFAULTS['label_nc']}]"


def test_opt_txt_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "opt.txt"
    path.write_text("                    ngf: 64\n           use_vae: maybe\n")
    with pytest.raises(ValueError, match=r"opt.txt:2.*use_vae"):
        read_opt_txt(path)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_save_official_round_trip(name, tmp_path):
    fx = official_fixture(name)
    loaded = load_official(OFFICIAL / f"{name}_checkpoint")
    save_official(tmp_path, loaded.networks)
    again = load_official(tmp_path)
    assert again.networks.config == loaded.networks.config
    for part in ("generator", "discriminator", "encoder"):
        a, b = getattr(loaded.networks, part), getattr(again.networks, part)
        assert (a is None) == (b is None)
        if a is not None:
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    s = again.networks.config.semantics
    semantics = build_semantics(fx["label"], s.label_nc, s.contain_dontcare_label, fx["instance"], s.use_instance)
    z = fx["z"] if again.networks.config.generator.z_dim else None
    with torch.no_grad():
        before = loaded.networks.eval().generator(semantics, z)
        after = again.networks.eval().generator(semantics, z)
    assert torch.equal(before, after)


def _copy_checkpoint(tmp_path, name="cityscapes_like"):
    require_official()
    folder = tmp_path / name
    shutil.copytree(OFFICIAL / f"{name}_checkpoint", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def test_missing_generator_file_is_named(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    (folder / "latest_net_G.pth").unlink()
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        load_official(folder)


def test_missing_discriminator_file_loads_generator_only(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    (folder / "latest_net_D.pth").unlink()
    assert load_official(folder).networks.discriminator is None


def test_wrong_key_is_named_with_the_file(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    state = torch.load(folder / "latest_net_G.pth", weights_only=True)
    state["head_0.conv_0.weight_oops"] = state.pop("head_0.conv_0.weight_orig")
    torch.save(state, folder / "latest_net_G.pth")
    with pytest.raises(ValueError, match=r"latest_net_G.pth: missing key 'head_0.conv_0.weight_orig'"):
        load_official(folder)


def test_shape_mismatch_is_named_with_the_file(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    text = (folder / "opt.txt").read_text().replace("ngf: 4 ", "ngf: 8 ")
    (folder / "opt.txt").write_text(text)
    with pytest.raises(ValueError, match=r"latest_net_G.pth: key '.*' has shape"):
        load_official(folder)


class NotATensor:
    """Unpickling this needs code from the test module: weights_only loading must refuse it."""


def test_a_pickle_with_code_is_refused(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1), "payload": NotATensor()}, folder / "latest_net_G.pth")
    with pytest.raises(ValueError, match="latest_net_G.pth: cannot read it as a PyTorch state dict") as error:
        load_official(folder)
    # one line, naming what was refused, and never the advice to load it with weights_only=False
    message = str(error.value)
    assert "\n" not in message and "NotATensor" in message and "never runs code" in message
    assert "weights_only=False" not in message and "trust" not in message


def test_a_corrupt_file_is_named(tmp_path):
    folder = _copy_checkpoint(tmp_path)
    (folder / "latest_net_D.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="latest_net_D.pth: cannot read it") as error:
        load_official(folder)
    assert "\n" not in str(error.value)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing_writer(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_model_config_defaults_follow_netG():
    config = model_config_from_options({"netG": "pix2pixhd", "label_nc": 3, "no_instance": True})
    assert config.generator.norm_G == "instance"
    assert model_config_from_options({"label_nc": 3}).generator.norm_G == "spectralspadesyncbatch3x3"


def tiny_networks(seed: int):
    torch.manual_seed(seed)
    config = ModelConfig(SemanticsConfig(5, False, False),
                         GeneratorConfig(ngf=4, crop_size=64, spade_hidden=8, norm_G="spectralspadeinstance3x3"))
    return build_networks(config, "xavier")


def test_rewriting_a_checkpoint_keeps_the_files_beside_it(tmp_path):
    folder = tmp_path / "model"
    save_checkpoint(folder, tiny_networks(0), training_state={"step": 1})
    (folder / "README.md").write_text("how this model was trained\n")
    (folder / "samples").mkdir()
    (folder / "samples" / "a.png").write_bytes(b"png")
    new = tiny_networks(1)
    save_checkpoint(folder, new)
    assert (folder / "README.md").read_text() == "how this model was trained\n"
    assert (folder / "samples" / "a.png").read_bytes() == b"png"
    assert not (folder / "training_state.pt").exists()        # a checkpoint file: the new one has none
    loaded = load_checkpoint(folder).networks.generator.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in new.generator.state_dict().items())


def test_a_save_writes_each_weight_from_its_own_memory(tmp_path, monkeypatch):
    """A save holds no second copy of the model: safetensors gets the module's own tensors, copies
    only of those that are views into shared memory (γ and β of one matrix, for inference)."""
    networks = tiny_networks(0)
    first = next(m for m in networks.generator.modules() if isinstance(m, SPADE))
    share_gamma_beta_storage(first)
    passed: dict[str, dict[str, int]] = {}
    save = checkpoint_module.save_safetensors

    def spy(tensors, filename, *args, **kwargs):
        passed[Path(filename).stem] = {key: value.data_ptr() for key, value in tensors.items()}
        return save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_safetensors", spy)
    save_checkpoint(tmp_path / "model", networks)
    state = networks.generator.state_dict()
    views = {key for key, value in state.items() if value.data_ptr() in (first.mlp_gamma.weight.data_ptr(),
                                                                        first.mlp_beta.weight.data_ptr())}
    assert len(views) == 2
    written = passed["generator"]
    assert all(written[key] == value.data_ptr() for key, value in state.items() if key not in views)
    assert all(written[key] != state[key].data_ptr() for key in views)
    loaded = load_checkpoint(tmp_path / "model").networks.generator.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_a_folder_that_is_not_a_checkpoint_is_never_replaced(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"models: exists and is not a checkpoint folder"):
        save_checkpoint(folder, tiny_networks(0))
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no temporary folder left behind
    (folder / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(FileExistsError, match="not a checkpoint folder"):
        save_checkpoint(folder, tiny_networks(0))
    empty = tmp_path / "empty"
    empty.mkdir()
    save_checkpoint(empty, tiny_networks(0))
    assert (empty / "generator.safetensors").is_file()
