"""The shared configuration: strict parsing, overrides, files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fagan_engine.util.config import FAGANConfig, load_config
from fagan_engine.util.errors import ConfigError


def test_round_trip_through_dict() -> None:
    cfg = FAGANConfig()
    assert FAGANConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model": {"n_feat": 3}}, "unknown config key 'model.n_feat'"),
        ({"model": {"scale": 3}}, "model.scale must be one of"),
        ({"model": {"n_blocks": "4"}}, "must be an integer"),
        ({"train": {"bf16": 1}}, "must be true or false"),
        ({"data": {"train": "a.nii"}}, "must be a list"),
        ({"optimizer": {}}, "unknown config key"),
        ({"train": {"pretrain_iterations": 10, "iterations": 5}}, "pretrain_iterations"),
        ({"train": {"output_dir": " "}}, "train.output_dir must name the run folder"),
        ({"train": {"beta1": 2}}, "train.beta1 must be in [0, 1)"),
        ({"train": {"beta2": -0.5}}, "train.beta2 must be in [0, 1)"),
        ({"train": {"lr": 1e300}}, "train.lr must be in [1.17549e-38, 3.40282e+38]"),
        ({"train": {"lr": 0}}, "train.lr must be in"),
        ({"train": {"lr_gamma": 0}}, "train.lr_gamma must be in (0, 1]"),
        ({"train": {"lr_gamma": 1.5}}, "train.lr_gamma must be in (0, 1]"),
        ({"train": {"ema_decay": 1}}, "train.ema_decay must be in [0, 1)"),
        ({"train": {"pixel_weight": -5}}, "train.pixel_weight must be in [0, "),
        ({"train": {"perceptual_weight": -1}}, "train.perceptual_weight must be in [0, "),
        ({"train": {"adversarial_weight": 1e39}}, "train.adversarial_weight must be in [0, "),
        ({"train": {"seed": -1}}, "train.seed must be in [0, 4294967296)"),
        ({"train": {"seed": 2**64}}, "train.seed must be in [0, 4294967296)"),
        ({"model": {True: 2}}, "unknown config key 'model.True' (YAML reads on, off"),  # a TypeError traceback
        ({1: "x"}, "unknown config key '1'"),
        ({"train": {"lr_milestones": [2], "lr_gamma": 0.1}}, "act only with train.lr_schedule=multistep"),  # ignored
        ({"train": {"lr_schedule": "multistep", "lr_milestones": [-3, 1000]}}, "must be increasing iterations from 1"),
        ({"train": {"lr_schedule": "multistep", "lr_milestones": [5, 5]}}, "must be increasing iterations from 1"),
        ({"train": {"lr_schedule": "multistep"}}, "needs train.lr_milestones"),
        ({"train": {"lr": "fast"}}, "must be a number, got 'fast'"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        FAGANConfig.from_dict(data)
    assert fragment.split("'")[0] in str(info.value)
    assert "\n" not in str(info.value)


def test_a_yaml_number_without_a_dot_is_a_number(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-4`` as text: it was refused as "must be a number, got '1e-4'"."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n")
    assert load_config(path).train.lr == 1e-4


def test_overrides_parse_json_values() -> None:
    cfg = FAGANConfig().with_overrides(["model.scale=2", "train.lr=0.001", "data.train=[\"a.nii\"]", "train.output_dir=x/y"])
    assert (cfg.model.scale, cfg.train.lr, cfg.data.train, cfg.train.output_dir) == (2, 0.001, ["a.nii"], "x/y")
    with pytest.raises(ConfigError):
        FAGANConfig().with_overrides(["model.nope=1"])
    with pytest.raises(ConfigError):
        FAGANConfig().with_overrides(["scale=2"])


def test_an_override_given_twice_is_refused_with_the_key_named() -> None:
    """As a key written twice in a config file: which one wins would be silent."""
    cases = {
        ("train.iterations=5", "train.iterations=7"): "--set gives train.iterations twice ('train.iterations=5' and 'train.iterations=7')",
        ("data.degradation.zoom=[1, 1]", "data.degradation={}"): "--set gives data.degradation.zoom twice, once inside data.degradation",
    }
    for overrides, fragment in cases.items():
        with pytest.raises(ConfigError) as info:
            FAGANConfig().with_overrides(list(overrides))
        assert str(info.value).startswith(fragment) and "\n" not in str(info.value)
    assert FAGANConfig().with_overrides(["data.degradation.zoom=[1, 1]", "data.degradation.noise=[0, 0]"]).data.degradation.zoom == [1, 1]


def test_load_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model:\n  scale: 8\ntrain:\n  iterations: 3\n  pretrain_iterations: 1\n")
    (tmp_path / "c.json").write_text(json.dumps({"model": {"scale": 2}}))
    assert load_config(str(tmp_path / "c.yaml")).model.scale == 8
    assert load_config(str(tmp_path / "c.json")).model.scale == 2
    (tmp_path / "bad.yaml").write_text("model: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_the_preset_decides_the_architecture_switches() -> None:
    cfg = FAGANConfig.from_dict({"model": {"preset": "srgan"}})
    assert (cfg.model.use_lffb, cfg.model.use_ca, cfg.model.use_sa) == (False, False, False)
    assert FAGANConfig().with_overrides(["model.preset=ca-srgan"]).model.use_ca is True
    assert FAGANConfig().with_overrides(["model.preset=ca-srgan"]).model.use_sa is False
    with pytest.raises(ConfigError, match="contradicts preset 'srgan'"):
        FAGANConfig.from_dict({"model": {"preset": "srgan", "use_lffb": True}})


def test_both_generators_share_one_list_of_attention_settings() -> None:
    """The GFFB settings are declared once (``AttentionConfig``) and still stored flat, so the bundled
    in-plane and through-plane checkpoints read back unchanged."""
    import dataclasses

    from fagan_engine.models.archs.through_plane import ThroughPlaneModelConfig
    from fagan_engine.models.checkpoint import bundled_checkpoints, read_metadata, read_through_plane
    from fagan_engine.util.config import AttentionConfig, ModelConfig, model_config_from_dict

    shared = {f.name for f in dataclasses.fields(AttentionConfig)}
    assert "fusion_eps" in shared and "ca_reduction" in shared
    for cls in (ThroughPlaneModelConfig, ModelConfig):
        assert shared <= {f.name for f in dataclasses.fields(cls)}
    stored = read_metadata(str(bundled_checkpoints()[0])).model
    assert dataclasses.asdict(model_config_from_dict(stored)) == stored
    through_plane = read_through_plane().metadata["model"]
    assert ThroughPlaneModelConfig.from_dict(through_plane).to_dict() == through_plane
    assert ThroughPlaneModelConfig().ca_reduction == 4 and AttentionConfig().ca_reduction == 16


@pytest.mark.parametrize("name, text", [
    ("c.yaml", "model:\n  scale: 2\ntrain:\n  output_dir: mine\ntrain:\n  iterations: 2\n"),
    ("c.json", '{"train": {"output_dir": "mine"}, "train": {"iterations": 2}}'),
])
def test_a_section_given_twice_is_refused_not_merged(tmp_path: Path, name: str, text: str) -> None:
    """The parsers keep the last of two equal keys: the first ``train`` section (its output_dir) was silently dropped."""
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="'train' is given twice"):
        load_config(str(tmp_path / name))


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    from fagan_engine.util.config import read_config_mapping

    (tmp_path / "m.yaml").write_text("a: &x {b: 1}\nc:\n  <<: *x\n  b: 3\n")
    assert read_config_mapping(tmp_path / "m.yaml") == {"a": {"b": 1}, "c": {"b": 3}}


def test_the_module_entry_point_help_and_errors(capsys: pytest.CaptureFixture) -> None:
    """``python -m fagan_engine --help`` is help (exit 0); no or an unknown command is one ``error:`` line (exit 2)."""
    from fagan_engine.__main__ import main

    assert main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: python -m fagan_engine {sr,")
    for argv in ([], ["frobnicate"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")


ROOT = Path(__file__).resolve().parents[2]
TINY_FIT = {"iterations": 1, "batch_size": 2, "lr_rows": 4, "patch_cols": 16}


def test_every_bundled_recipe_passes_the_checks() -> None:
    """The range checks refuse no recipe the project ships (training configs and through-plane pretraining recipes)."""
    from fagan_engine.through_plane.fit import load_pretrain_config

    recipes = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(recipes) > 10
    for recipe in recipes:
        load = load_pretrain_config if recipe.name.startswith("through_plane_pretrain") else lambda p: load_config(str(p))
        load(recipe)


def pretrain_recipe(tmp_path: Path, **changes: object) -> Path:
    """A tiny pretraining recipe (JSON) writing ``tmp_path/new/sub/x.safetensors``, with ``changes`` (``fit``: merged)."""
    fit = {**TINY_FIT, **changes.pop("fit", {})}
    data = {"pool_size": 2, "output": str(tmp_path / "new" / "sub" / "x.safetensors"), **changes, "fit": fit}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def pretrain_error(recipe: Path, capsys: pytest.CaptureFixture) -> str:
    """The one ``error:`` line of ``pretrain-through-plane recipe`` (exit 2); nothing but the recipe is left."""
    from fagan_engine.cli.pretrain import main

    capsys.readouterr()
    code = main([str(recipe)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    assert [p.name for p in recipe.parent.iterdir()] == [recipe.name]
    return lines[0]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"model": {"bogus": 1}}, "unknown config key 'model.bogus'"),
        ({"model": {"n_feats": "16"}}, "'model.n_feats' must be an integer"),
        ({"model": {"n_feats": 4}}, "model.n_feats must be in [8, 256]"),
        ({"model": {"upsampler": "pixelshuffle"}}, "model.upsampler"),
        ({"model": {"fusion_eps": 0}}, "model.fusion_eps must be in (0"),
        ({"model": {"fusion_alpha": float("nan")}}, "'model.fusion_alpha' must be a finite number"),
        ({"synthesis": {"bogus_weight": 1}}, "unknown config key 'synthesis.bogus_weight'"),
        ({"synthesis": {"texture": 0.9}}, "synthesis.texture must be in [0, 0.5]"),
        ({"synthesis": 3}, "'synthesis' must be a mapping"),
        ({"ratio": 3}, "'ratio' must be a list of 2 values"),
        ({"ratio": [3.0, 1.5]}, "ratio must be [low, high] with low <= high"),
        ({"validation_slab": [1.5, 2.5]}, "'validation_slab' must be an integer"),
        ({"output": 5}, "'output' must be a string"),
        ({"init": 7}, "'init' must be a string"),
        ({"gap_probability": 7}, "gap_probability must be in [0, 1]"),
        ({"plane": "oblique"}, "plane must be one of"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
        ({"fit": {"seed": "abc"}}, "'fit.seed' must be an integer"),
        ({"fit": {"seed": -1}}, "fit.seed must be in [0, 4294967296)"),
        ({"fit": {"lr": 1e300}}, "fit.lr must be in"),
        ({"fit": {"foreground_tries": 0}}, "fit.foreground_tries must be in [1, inf)"),
        ({"fit": {"lr_rows": 1}}, "fit.lr_rows must be in [2, inf)"),
        ({"fit": {"sampling": "edges"}}, "fit.sampling must be one of"),
        ({"fit": {"steps": 4}}, "unknown config key 'fit.steps'"),
    ],
)
def test_a_pretraining_recipe_is_checked_key_by_key_before_any_work(tmp_path, capsys, changes: dict, fragment: str) -> None:
    """Unknown keys, wrong types and out-of-range values of every section: one line naming the key as the recipe
    spells it (``synthesis.*``, not ``data.synthesis.*``), exit 2, no output folder (were tracebacks, or a run)."""
    line = pretrain_error(pretrain_recipe(tmp_path, **changes), capsys)
    assert fragment in line and "data." not in line, line


@pytest.mark.parametrize("changes, fragment", [
    ({"output": "new/sub/x.pt"}, "output must name a .safetensors file"),
    ({"init": "missing.safetensors"}, "not found"),
])
def test_a_refused_pretraining_leaves_no_folder_behind(tmp_path, capsys, monkeypatch, changes: dict, fragment: str) -> None:
    """Refusals after the recipe's checks left the output's new folders (``new/sub``) behind."""
    monkeypatch.chdir(tmp_path)
    assert fragment in pretrain_error(pretrain_recipe(tmp_path, **changes), capsys)


def test_an_interrupted_pretraining_leaves_no_folder_behind(tmp_path) -> None:
    """Ctrl-C during the fit left the output's new folders; a finished run keeps them, without its lock file."""
    from fagan_engine.through_plane.fit import pretrain

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    recipe = pretrain_recipe(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        pretrain(recipe, interrupt)
    assert [p.name for p in tmp_path.iterdir()] == [recipe.name]
    written = pretrain(recipe)
    assert sorted(p.name for p in written.parent.iterdir()) == ["x.json", "x.safetensors"]


def test_a_config_that_is_a_folder_and_an_override_of_no_section_are_named_so(tmp_path: Path) -> None:
    """A folder given as the config was "not found"; --set bogus.x=1 was told to "look like section.key=value"."""
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(str(tmp_path))
    with pytest.raises(ConfigError, match="names no config section 'bogus'; sections: "):
        FAGANConfig().with_overrides(["bogus.x=1"])


def test_a_validation_slab_that_leaves_no_slice_is_named() -> None:
    """validation_slab [0, 1000] failed with "no usable template slice", naming neither the recipe key nor why."""
    import numpy as np

    from fagan_engine.through_plane.fit import PretrainConfig, synthetic_pool

    with pytest.raises(ConfigError, match=r"validation_slab \[0, 1000\] holds every one of the template's"):
        synthetic_pool(PretrainConfig(validation_slab=(0, 1000)), np.random.default_rng(0))
