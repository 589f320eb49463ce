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
        ({"model": {"n_feat": 3}}, "unknown config key 'model.'n_feat''".replace("''", "'")),
        ({"model": {"scale": 3}}, "model.scale must be one of"),
        ({"model": {"n_blocks": "4"}}, "must be an integer"),
        ({"train": {"bf16": 1}}, "must be true or false"),
        ({"data": {"train": "a.nii"}}, "must be a list"),
        ({"optimizer": {}}, "unknown config key"),
        ({"train": {"pretrain_iterations": 10, "iterations": 5}}, "pretrain_iterations"),
        ({"train": {"output_dir": " "}}, "train.output_dir must name the run folder"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        FAGANConfig.from_dict(data)
    assert fragment.split("'")[0] in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_parse_json_values() -> None:
    cfg = FAGANConfig().with_overrides(["model.scale=2", "train.lr=0.001", "data.train=[\"a.nii\"]", "train.output_dir=x/y"])
    assert (cfg.model.scale, cfg.train.lr, cfg.data.train, cfg.train.output_dir) == (2, 0.001, ["a.nii"], "x/y")
    with pytest.raises(ConfigError):
        FAGANConfig().with_overrides(["model.nope=1"])
    with pytest.raises(ConfigError):
        FAGANConfig().with_overrides(["scale=2"])


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
