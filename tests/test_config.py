"""Training configs: a file can start from another and change only what it names."""

import pytest

from device.frontend import FrontendConfig
from trainer.config import REPO_ROOT, load_config


def test_base_file_is_merged_key_by_key(tmp_path):
    (tmp_path / "base.toml").write_text(
        'steps = 100\nlearning_rate = 0.01\n[data]\nsources = ["a", "b"]\nheld_out_languages = ["zh"]\n'
        "[episodes]\nways = 7\nshots = 3\n"
    )
    (tmp_path / "row.toml").write_text('base = "base.toml"\nsteps = 5\n[data]\nsources = ["a"]\n')
    config = load_config(tmp_path / "row.toml")
    assert config.steps == 5 and config.learning_rate == 0.01
    assert config.data.sources == ["a"] and config.data.held_out_languages == ["zh"]
    assert (config.episodes.ways, config.episodes.shots) == (7, 3)


def test_frontend_table_sets_the_features_the_encoder_is_trained_on(tmp_path):
    (tmp_path / "band.toml").write_text("[frontend]\nfmax_hz = 3800.0\n[encoder]\nnum_mels = 32\n")
    config = load_config(tmp_path / "band.toml")
    assert config.frontend == FrontendConfig(fmax_hz=3800.0, num_mels=32)  # mel bins follow the encoder
    assert config.to_dict()["frontend"]["fmax_hz"] == 3800.0
    assert load_config(REPO_ROOT / "configs/default.toml").frontend == FrontendConfig()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("num_mels = 32", "must agree"),
        ("fmax_hz = 9000.0", "fmax_hz <= 8000"),
        ("fmin_hz = 4000.0\nfmax_hz = 300.0", "fmin_hz < fmax_hz"),
    ],
)
def test_a_frontend_the_encoder_cannot_use_is_refused(tmp_path, table, message):
    (tmp_path / "bad.toml").write_text(f"[frontend]\n{table}\n")
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "bad.toml")


# What a user runs (configs/) and the experiments that did not ship, beside their pages (docs/experiments/):
# both must keep loading, bases included (an experiment's base is ../../configs/default.toml).
CONFIG_FILES = sorted([*(REPO_ROOT / "configs").rglob("*.toml"), *(REPO_ROOT / "docs/experiments").glob("*.toml")])


def test_shipped_configs_load():
    assert any(path.parent.name == "experiments" for path in CONFIG_FILES)
    for path in CONFIG_FILES:
        config = load_config(path)
        assert config.encoder.window_frames > 0, path
    row = load_config(REPO_ROOT / "configs/ablation/1_tts_only.toml")
    assert row.data.sources == ["data_cache/synth"] and row.distillation_weight == 0 and row.steps == 1200
    assert row.data.negatives == load_config(REPO_ROOT / "configs/default.toml").data.negatives


def test_every_config_encoder_fits_the_device_budget():
    """At most 10 M multiply-accumulates per window (issue budget), checked before anyone trains for an hour."""
    from trainer.model import build_encoder, count_macs

    for path in CONFIG_FILES:
        macs = count_macs(build_encoder(load_config(path).encoder))
        assert macs <= 10_000_000, f"{path.name}: {macs} MACs per window"


def test_shipped_encoder_within_size_and_compute_budget():
    """The committed int8 model: at most 150 KB and 10 M MACs, as its manifest measured them at export."""
    from device.manifest import load_manifest

    manifest = load_manifest(REPO_ROOT / "firmware_models/encoder.tflite")
    assert manifest.figures["model_bytes"] == (REPO_ROOT / "firmware_models/encoder.tflite").stat().st_size
    assert manifest.figures["model_bytes"] <= 150 * 1024
    assert manifest.figures["macs_per_window"] <= 10_000_000


def test_export_from_a_run_without_training_says_what_is_missing(tmp_path):
    from trainer.cli import main

    with pytest.raises(SystemExit, match=r"has no normalisation\.npz, corpus\.json: export needs a training run"):
        main(["export", "--random-weights", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.tflite")])
    with pytest.raises(SystemExit, match="best.weights.npz"):
        main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.tflite")])
