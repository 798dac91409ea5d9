"""Tests for trainer.augment: SNR accuracy, reverb alignment, placement, masks, spectra, repeatability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.audio import write_wav
from device.frontend import log_mel
from trainer import augment
from trainer.augment import (
    AugmentConfig,
    Augmenter,
    add_background,
    channel_filter,
    coloured_noise,
    load_noise_bank,
    mix_at_snr,
    place_in_window,
    random_gain,
    reverberate,
    spec_augment,
    speed_perturb,
    synthetic_rir,
    vtlp_warp_features,
)

RATE = 16000
SHARED_NOISE = Path("/work/shared/data/background_noise")


def speech_like(seconds: float = 1.0, lead: float = 0.25, trail: float = 0.25, amplitude: float = 0.1) -> np.ndarray:
    """Silence, then voiced 'syllables' (140 Hz harmonics under a 4 Hz envelope), then silence."""
    voiced = int((seconds - lead - trail) * RATE)
    t = np.arange(voiced) / RATE
    harmonics = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 15))
    envelope = np.sin(np.pi * 4 * t) ** 2
    body = harmonics * envelope
    body *= amplitude / np.max(np.abs(body))
    return np.concatenate([np.zeros(int(lead * RATE)), body, np.zeros(int(trail * RATE))]).astype(np.float32)


def referenceactive_power(x: np.ndarray, frame: int = 400, hop: int = 160) -> float:
    """Independent active-speech power: 25 ms / 10 ms overlapping frames within 40 dB of the loudest."""
    x = np.asarray(x, dtype=np.float64)
    starts = np.arange(0, len(x) - frame + 1, hop)
    power = np.array([np.mean(x[s : s + frame] ** 2) for s in starts])
    active = power >= power.max() * 1e-4
    return float(power[active].mean())


def measured_snr(speech: np.ndarray, mixture: np.ndarray) -> float:
    noise = mixture.astype(np.float64) - speech.astype(np.float64)
    return 10 * np.log10(referenceactive_power(speech) / np.mean(noise**2))


def noise_of_kind(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "bursty":  # noise that is loud half the time, like clattering dishes
        gate = (np.arange(length) // 2000) % 2 == 0
        return (rng.standard_normal(length) * np.where(gate, 1.0, 0.05)).astype(np.float32)
    return coloured_noise(length, rng, exponent={"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "bursty"])
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 5.0, 10.0, 20.0])
def test_mix_at_snr_achieves_requested_snr(kind: str, snr_db: float) -> None:
    speech = speech_like()
    noise = noise_of_kind(kind, len(speech), np.random.default_rng(1))
    mixture = mix_at_snr(speech, noise, snr_db)
    assert mixture.shape == speech.shape and mixture.dtype == np.float32
    assert abs(measured_snr(speech, mixture) - snr_db) < 1.0


@pytest.mark.parametrize("coloured_probability", [0.0, 1.0])
@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_add_background_achieves_requested_snr(coloured_probability: float, snr_db: float) -> None:
    rng = np.random.default_rng(2)
    speech = speech_like()
    bank = [noise_of_kind("bursty", 5000, rng), noise_of_kind("pink", 3 * RATE, rng)]  # looped and cropped
    for seed in range(4):
        mixture = add_background(speech, bank, np.random.default_rng(seed), (snr_db, snr_db), coloured_probability)
        assert abs(measured_snr(speech, mixture) - snr_db) < 1.0


def test_add_background_with_empty_bank_uses_generated_noise() -> None:
    speech = speech_like()
    mixture = add_background(speech, [], np.random.default_rng(0), (10.0, 10.0), coloured_probability=0.0)
    assert abs(measured_snr(speech, mixture) - 10.0) < 1.0


def test_mix_at_snr_scales_down_instead_of_clipping() -> None:
    speech = speech_like(amplitude=0.9)
    noise = coloured_noise(len(speech), np.random.default_rng(3), exponent=0.0)
    mixture = mix_at_snr(speech, noise, 0.0)
    assert np.max(np.abs(mixture)) <= 1.0
    gain = np.dot(mixture, speech) / np.dot(speech, speech)  # noise is uncorrelated with speech
    assert gain < 0.9
    assert abs(measured_snr(gain * speech, mixture) - 0.0) < 1.0


def test_mix_at_snr_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mix_at_snr(np.zeros(100), np.zeros(50), 10.0)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_coloured_noise_has_requested_slope_and_unit_rms(exponent: float) -> None:
    noise = coloured_noise(1 << 17, np.random.default_rng(4), exponent=exponent)
    assert noise.dtype == np.float32 and len(noise) == 1 << 17
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    segment = 2048
    frames = noise[: len(noise) // segment * segment].reshape(-1, segment) * np.hanning(segment)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(segment, 1 / RATE)
    band = (freqs >= 50) & (freqs <= 7000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert abs(-slope - exponent) <= 0.3


def test_coloured_noise_random_exponent_and_tiny_lengths() -> None:
    rng = np.random.default_rng(5)
    assert len(coloured_noise(0, rng)) == 0 and not np.any(coloured_noise(1, rng))
    noise = coloured_noise(RATE, rng)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_rir_is_normalised_with_direct_path_first(seed: int) -> None:
    rir = synthetic_rir(np.random.default_rng(seed), RATE, rt60_range=(0.15, 0.8))
    assert 0.15 * RATE - 1 <= len(rir) <= 0.8 * RATE
    assert np.linalg.norm(rir.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    assert np.argmax(np.abs(rir)) == 0
    assert np.all(np.isfinite(rir))


@pytest.mark.parametrize("seed", range(5))
def test_reverberate_keeps_length_rms_and_onset(seed: int) -> None:
    rir = synthetic_rir(np.random.default_rng(seed))
    speech = speech_like()
    wet = reverberate(speech, rir)
    assert wet.shape == speech.shape and wet.dtype == np.float32
    assert np.sqrt(np.mean(wet.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(speech**2.0)), rel=1e-4)
    onset = int(np.argmax(np.abs(speech) > 0))
    assert np.max(np.abs(wet[:onset])) < 1e-6  # nothing before the onset: no negative delay
    assert not np.allclose(wet, speech)
    click = np.zeros(RATE, dtype=np.float32)
    click[3000] = 0.5
    assert np.argmax(np.abs(reverberate(click, rir))) == 3000  # direct path stays at the onset


def test_reverberate_aligns_on_a_delayed_direct_path() -> None:
    rir = np.concatenate([np.zeros(200), synthetic_rir(np.random.default_rng(6))])  # measured RIRs start late
    click = np.zeros(RATE, dtype=np.float32)
    click[1234] = 0.5
    assert np.argmax(np.abs(reverberate(click, rir))) == 1234


def test_place_in_window_preserves_a_shorter_utterance() -> None:
    speech = speech_like(seconds=0.5, lead=0.0, trail=0.0)
    fill = np.full(RATE, 0.001, dtype=np.float32)
    offsets = set()
    for seed in range(20):
        out = place_in_window(speech, RATE, np.random.default_rng(seed), fill=fill)
        assert out.shape == (RATE,) and out.dtype == np.float32
        offset = int(np.argmax(out != fill))
        np.testing.assert_array_equal(out[offset : offset + len(speech)], speech)
        np.testing.assert_array_equal(np.delete(out, np.arange(offset, offset + len(speech))), np.float32(0.001))
        offsets.add(offset)
    assert len(offsets) > 10 and min(offsets) < RATE // 8 and max(offsets) > RATE // 2 - RATE // 8
    np.testing.assert_array_equal(fill, np.float32(0.001))  # the caller's fill is not modified


def test_place_in_window_zero_fill_and_exact_fit() -> None:
    speech = speech_like(seconds=0.5, lead=0.0, trail=0.0)
    out = place_in_window(speech, RATE, np.random.default_rng(0))
    assert out.shape == (RATE,) and np.count_nonzero(out) == np.count_nonzero(speech)
    np.testing.assert_array_equal(place_in_window(speech, len(speech), np.random.default_rng(0)), speech)
    with pytest.raises(ValueError, match="fill"):
        place_in_window(speech, RATE, np.random.default_rng(0), fill=np.zeros(10))


def test_place_in_window_crops_a_longer_clip_around_its_loud_part() -> None:
    clip = (np.arange(4 * RATE) * 1e-9).astype(np.float32)  # a faint ramp makes every crop start identifiable
    clip[int(2.5 * RATE) : int(2.9 * RATE)] += speech_like(seconds=0.4, lead=0.0, trail=0.0, amplitude=0.5)
    for seed in range(20):
        out = place_in_window(clip, RATE, np.random.default_rng(seed))
        assert out.shape == (RATE,)
        starts = [
            s for s in np.flatnonzero(clip[: len(clip) - RATE + 1] == out[0]) if np.array_equal(clip[s : s + RATE], out)
        ]
        assert len(starts) == 1  # a contiguous slice of the clip
        assert np.sum(out.astype(np.float64) ** 2) > 0.3 * np.sum(clip.astype(np.float64) ** 2)  # kept the loud part


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_spec_augment_masks_requested_count_with_mean() -> None:
    features = np.random.default_rng(7).standard_normal((500, 200)).astype(np.float32)
    exact = 0
    for seed in range(20):
        out = spec_augment(
            features, np.random.default_rng(seed), time_masks=3, time_width=10, freq_masks=2, freq_width=5
        )
        assert out.shape == features.shape and out.dtype == np.float32
        masked = out == np.float32(features.mean())
        time_runs, freq_runs = runs(masked.all(axis=1)), runs(masked.all(axis=0))
        assert 1 <= len(time_runs) <= 3 and sum(time_runs) <= 30
        assert 1 <= len(freq_runs) <= 2 and sum(freq_runs) <= 10
        assert np.array_equal(out[~masked], features[~masked])
        exact += len(time_runs) == 3 and len(freq_runs) == 2
    assert exact >= 16  # fewer runs than masks only when two masks happen to overlap
    assert not np.any(features == np.float32(features.mean()))  # input untouched


def test_spec_augment_without_masks_is_identity() -> None:
    features = np.random.default_rng(8).standard_normal((98, 40)).astype(np.float32)
    out = spec_augment(features, np.random.default_rng(0), time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(out, features)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_tempo_and_pitch_together(factor: float) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)).astype(np.float32)
    out = speed_perturb(tone, np.random.default_rng(0), (factor, factor))
    assert out.dtype == np.float32
    assert len(out) == pytest.approx(RATE / factor, rel=0.01)
    peak_hz = np.argmax(np.abs(np.fft.rfft(out * np.hanning(len(out))))) * RATE / len(out)
    assert peak_hz == pytest.approx(1000 * factor, rel=0.01)


def test_vtlp_identity_and_formant_shift() -> None:
    t = np.arange(RATE) / RATE
    tone = lambda hz: (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)  # noqa: E731
    features = log_mel(tone(1000))
    same = vtlp_warp_features(features, np.random.default_rng(0), (1.0, 1.0))
    np.testing.assert_allclose(same, features, atol=1e-5)
    warped = vtlp_warp_features(features, np.random.default_rng(0), (1.1, 1.1))
    assert warped.shape == features.shape
    expected_band = np.argmax(log_mel(tone(1100)).mean(axis=0))
    assert abs(int(np.argmax(warped.mean(axis=0))) - int(expected_band)) <= 1
    assert np.argmax(warped.mean(axis=0)) > np.argmax(features.mean(axis=0))


def test_random_gain_clips() -> None:
    x = np.linspace(-0.9, 0.9, 1000, dtype=np.float32)
    loud = random_gain(x, np.random.default_rng(0), (6.0, 6.0))
    assert loud.dtype == np.float32 and loud.max() == 1.0 and loud.min() == -1.0
    quiet = random_gain(x, np.random.default_rng(0), (-6.0, -6.0))
    np.testing.assert_allclose(quiet, x * 10 ** (-6 / 20), rtol=1e-5)


ALWAYS = {"speed_probability": 1.0, "reverb_probability": 1.0, "noise_probability": 1.0, "vtlp_probability": 1.0}


def band_power_db(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(len(x), 1.0 / RATE)
    return 10 * np.log10(spectrum[(frequencies >= low) & (frequencies < high)].sum() + 1e-30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_filter_removes_the_band_outside_the_drawn_cutoffs(seed: int) -> None:
    white = np.random.default_rng(seed).standard_normal(RATE).astype(np.float32) * 0.1
    narrow = channel_filter(white, np.random.default_rng(seed), (3800.0, 3800.0), (250.0, 250.0))
    assert narrow.shape == white.shape and narrow.dtype == np.float32
    # Inside the pass band (edges aside) the level is unchanged; above the cutoff it is gone.
    assert abs(band_power_db(narrow, 500, 3300) - band_power_db(white, 500, 3300)) < 0.01
    assert band_power_db(narrow, 3800, 8000) < band_power_db(white, 3800, 8000) - 100
    assert band_power_db(narrow, 0, 100) < band_power_db(white, 0, 100) - 6
    # The cutoffs are drawn from the ranges, so two generators give two channels.
    a = channel_filter(white, np.random.default_rng(1), (3400.0, 7600.0))
    b = channel_filter(white, np.random.default_rng(2), (3400.0, 7600.0))
    assert not np.allclose(a, b)
    assert channel_filter(np.zeros(0, np.float32), np.random.default_rng(0)).size == 0


def test_augmenter_channel_band_limits_the_window() -> None:
    settings = {"noise_probability": 1.0, "coloured_probability": 1.0, "speed_probability": 0.0}
    narrow = Augmenter.from_dict(settings | {"channel_probability": 1.0, "channel_lowpass_hz_range": [4000.0, 4000.0]})
    wide = Augmenter.from_dict(settings)
    speech = speech_like(seconds=0.8, lead=0.05, trail=0.05, amplitude=0.05)
    seeds = range(8)
    narrow_top = [band_power_db(narrow(speech, RATE, np.random.default_rng(s)), 4000, 8000) for s in seeds]
    wide_top = [band_power_db(wide(speech, RATE, np.random.default_rng(s)), 4000, 8000) for s in seeds]
    # Filtered after the noise (the microphone), nothing is left up there; before it (a narrow-band source
    # in a room), the room's noise still is. Both happen among these seeds.
    assert min(narrow_top) < -100 < min(wide_top)
    assert max(narrow_top) > -50


def test_augmenter_without_channel_draws_nothing_for_it() -> None:
    """Probability 0 leaves the random stream alone: runs configured before the channel existed replay."""
    speech = speech_like(seconds=0.8, lead=0.05, trail=0.05, amplitude=0.5)
    off = Augmenter.from_dict(ALWAYS)
    off_other_ranges = Augmenter.from_dict(ALWAYS | {"channel_lowpass_hz_range": [3000.0, 3000.0]})
    on = Augmenter.from_dict(ALWAYS | {"channel_probability": 1.0})
    first = off(speech, RATE, np.random.default_rng(5))
    np.testing.assert_array_equal(first, off_other_ranges(speech, RATE, np.random.default_rng(5)))
    assert not np.allclose(first, on(speech, RATE, np.random.default_rng(5)))


def test_augmenter_is_repeatable_per_seed() -> None:
    rng = np.random.default_rng(9)
    augmenter = Augmenter.from_dict(ALWAYS | {"coloured_probability": 0.5}, noise_bank=[rng.standard_normal(RATE)])
    speech = speech_like(seconds=0.8, lead=0.05, trail=0.05, amplitude=0.5)
    first = augmenter(speech, RATE, np.random.default_rng(42))
    again = augmenter(speech, RATE, np.random.default_rng(42))
    other = augmenter(speech, RATE, np.random.default_rng(43))
    assert first.shape == (RATE,) and first.dtype == np.float32 and np.max(np.abs(first)) <= 1.0
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    features = log_mel(first)
    np.testing.assert_array_equal(
        augmenter.augment_features(features, np.random.default_rng(1)),
        augmenter.augment_features(features, np.random.default_rng(1)),
    )
    assert not np.allclose(
        augmenter.augment_features(features, np.random.default_rng(1)),
        augmenter.augment_features(features, np.random.default_rng(2)),
    )


def test_augmenter_defaults_handle_long_and_short_clips() -> None:
    augmenter = Augmenter()
    for seed, seconds in enumerate([0.3, 1.0, 2.5]):
        out = augmenter(speech_like(seconds=seconds, lead=0.0, trail=0.0), RATE, np.random.default_rng(seed))
        assert out.shape == (RATE,) and np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
        assert augmenter.augment_features(log_mel(out), np.random.default_rng(seed)).shape == (98, 40)


def test_config_round_trips_through_json() -> None:
    config = AugmentConfig(reverb_probability=0.25, snr_db_range=(5.0, 15.0))
    augmenter = Augmenter(config)
    restored = Augmenter.from_dict(json.loads(json.dumps(augmenter.to_dict())))
    assert restored.config == config
    assert Augmenter.from_dict({}).config == AugmentConfig()
    with pytest.raises(ValueError, match="reverb_probabilty"):
        AugmentConfig.from_dict({"reverb_probabilty": 0.5})


def test_load_noise_bank_reads_nested_wavs_and_skips_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "a.wav", 0.1 * np.ones(800), RATE)
    write_wav(tmp_path / "sub" / "b.WAV", 0.1 * np.ones(1600), RATE)
    write_wav(tmp_path / "silent.wav", np.zeros(800), RATE)
    (tmp_path / "notes.txt").write_text("not audio")
    bank = load_noise_bank([tmp_path / "missing", tmp_path])
    assert [len(noise) for noise in bank] == [800, 1600]
    assert all(noise.dtype == np.float32 for noise in bank)


@pytest.fixture(scope="module")
def shared_bank() -> list[np.ndarray]:
    if not SHARED_NOISE.is_dir():
        pytest.skip(f"shared noise folder {SHARED_NOISE} is absent on this machine")
    return load_noise_bank([SHARED_NOISE])


def test_load_noise_bank_reads_shared_folder(shared_bank: list[np.ndarray]) -> None:
    assert len(shared_bank) == len(list(SHARED_NOISE.glob("*.wav")))
    for noise in shared_bank:
        assert noise.ndim == 1 and noise.dtype == np.float32 and len(noise) > RATE
        assert np.max(np.abs(noise)) <= 1.0


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_add_background_with_recorded_noise(shared_bank: list[np.ndarray], snr_db: float) -> None:
    speech = speech_like()
    for seed in range(len(shared_bank)):
        mixture = add_background(speech, shared_bank, np.random.default_rng(seed), (snr_db, snr_db), 0.0)
        assert abs(measured_snr(speech, mixture) - snr_db) < 1.0


def testactive_power_ignores_silence() -> None:
    speech = speech_like()
    body = speech[int(0.25 * RATE) : int(0.75 * RATE)]
    assert augment.active_power(speech) == pytest.approx(np.mean(body.astype(np.float64) ** 2), rel=0.1)
