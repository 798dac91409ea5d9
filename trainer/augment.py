"""On-the-fly augmentation for training the keyword encoder: waveform first, then features.

Numpy only, because it runs inside a ``tf.data`` generator where each call handles one
clip and a TensorFlow op per step would only add graph overhead. Every random choice is
drawn from an explicit ``np.random.Generator``, so a seeded generator replays a run
exactly (no hidden global state).

Order, as in microWakeWord: clip -> :meth:`Augmenter.__call__` (speed, placement,
reverb, background noise, gain) -> ``device.frontend.log_mel`` (by the trainer) ->
:meth:`Augmenter.augment_features` (VTLP warp, SpecAugment). Audio is mono float32 in
[-1, 1] at 16 kHz.

Pitch/formant variation is done twice, cheaply, instead of with a waveform pitch shifter:
``speed_perturb`` (resampling, pitch and tempo together, like Kaldi) on the waveform, and
``vtlp_warp_features`` (vocal-tract-length perturbation) on the mel axis. A tempo-preserving
pitch shift would need a phase vocoder, costing far more per clip than a 40-bin
interpolation, and adding no variation that those two do not already give.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from device.audio import read_wav, resample
from device.frontend import FrontendConfig, hz_to_mel
from device.noise import coloured_noise

log = logging.getLogger(__name__)

# Active-speech measurement for SNR: 20 ms frames at 16 kHz, active when within 40 dB of
# the loudest frame.
_ACTIVE_FRAME_SAMPLES = 320
_ACTIVE_THRESHOLD_DB = -40.0

# Speed perturbation resamples 16 kHz to a multiple of 100 Hz, so the resampler's
# polyphase table has at most 160 phases.
_SPEED_BASE_RATE = 16000
_SPEED_RATE_GRID = 100

# Amplitude falls 60 dB over RT60: exp(-ln(1000) t / rt60).
_LN_1000 = math.log(1000.0)
# Early reflections: a few discrete echoes 2-30 ms after the direct path.
_REFLECTION_COUNT = (3, 7)
_REFLECTION_DELAY_S = (0.002, 0.030)
_REFLECTION_GAIN = (0.2, 0.6)
# No tap after the direct path may exceed this fraction of it, so the direct path stays
# the largest tap and marks where the dry signal sits.
_MAX_LATE_TAP = 0.9

# VTLP knee (Jaitly & Hinton 2013): frequencies scale by alpha up to about 80 % of the top
# band edge, then a second linear piece brings the top edge back onto itself.
_VTLP_KNEE_FRACTION = 0.8

# Width of the channel filter's band edges: about an 8 kHz recording's anti-alias roll-off.
_CHANNEL_EDGE_HZ = 400.0


def load_noise_bank(folders: list[Path], sample_rate: int = 16000) -> list[np.ndarray]:
    """Read every ``.wav`` under ``folders`` (recursively, sorted) as mono float32.

    Sorted so that a seeded generator picks the same files on every machine. Missing
    folders are skipped with a warning (a config may list optional corpora), and empty
    files are dropped since no gain can mix silence at a given SNR.
    """
    bank = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            log.warning("noise folder %s does not exist; skipped", folder)
            continue
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file()):
            samples = read_wav(path, sample_rate)
            if samples.size and np.any(samples):
                bank.append(samples)
    return bank


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (same length as ``speech``) scaled to exactly ``snr_db``.

    Speech power is measured over its *active* part only (20 ms frames within 40 dB of
    the loudest frame; see :func:`active_power`): a keyword placed in a training window
    is mostly silence, and averaging over that silence would make every mixture noisier
    than requested by the silence ratio. Noise power is the mean over the whole segment,
    because all of it is heard. If the mixture would clip, speech and noise are scaled
    down together (keeping the SNR exact) instead of clipping. When either signal is
    silent no gain reaches the SNR, and the speech is returned unchanged.
    """
    speech = np.asarray(speech, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if speech.shape != noise.shape:
        raise ValueError(f"speech and noise must have the same shape, got {speech.shape} and {noise.shape}")
    speech_power = active_power(speech)
    noise_power = float(np.mean(noise**2)) if noise.size else 0.0
    if speech_power == 0.0 or noise_power == 0.0:
        return speech.astype(np.float32)
    scale = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    mixture = speech + scale * noise
    peak = float(np.max(np.abs(mixture)))
    if peak > 1.0:
        mixture /= peak
    return mixture.astype(np.float32)


def add_background(
    speech: np.ndarray,
    noise_bank: list[np.ndarray],
    rng: np.random.Generator,
    snr_db_range: tuple[float, float] = (0.0, 20.0),
    coloured_probability: float = 0.3,
) -> np.ndarray:
    """Mix a random background into ``speech`` at an SNR drawn uniformly from ``snr_db_range``.

    The background is generated coloured noise with ``coloured_probability`` (always,
    if the bank is empty), else a random bank recording at a random offset; recordings
    shorter than the speech are looped.
    """
    speech = np.asarray(speech, dtype=np.float32)
    if not noise_bank or rng.random() < coloured_probability:
        noise = coloured_noise(len(speech), rng)
    else:
        noise = _noise_segment(noise_bank[rng.integers(len(noise_bank))], len(speech), rng)
    return mix_at_snr(speech, noise, rng.uniform(*snr_db_range))


def synthetic_rir(
    rng: np.random.Generator,
    sample_rate: int = 16000,
    rt60_range: tuple[float, float] = (0.15, 0.8),
    drr_db_range: tuple[float, float] = (-3.0, 10.0),
) -> np.ndarray:
    """A random room impulse response, unit energy, direct path at index 0.

    Built as the direct-path impulse, a few early reflections (discrete echoes 2-30 ms
    later) and a Gaussian late tail decaying 60 dB over an RT60 drawn from
    ``rt60_range``, scaled to a direct-to-reverberant ratio drawn from ``drr_db_range``
    (a far-field talker is around 0 dB). Synthetic rather than measured RIRs, so the
    trainer needs no RIR corpus; the direct path is kept the largest tap so
    :func:`reverberate` can align on it.
    """
    rt60 = rng.uniform(*rt60_range)
    length = max(2, int(rt60 * sample_rate))
    envelope = np.exp(-_LN_1000 * np.arange(length) / (rt60 * sample_rate))
    tail = rng.standard_normal(length) * envelope
    tail[0] = 0.0
    drr_db = rng.uniform(*drr_db_range)
    rir = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    rir += _early_reflections(length, envelope, sample_rate, rng)
    loudest_late = float(np.max(np.abs(rir[1:])))
    if loudest_late > _MAX_LATE_TAP:
        rir[1:] *= _MAX_LATE_TAP / loudest_late
    rir[0] = 1.0
    return (rir / np.linalg.norm(rir)).astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``speech`` with ``rir`` (FFT), same length and RMS as the input.

    The output starts at the RIR's largest tap (its direct path), so the dry signal
    does not move: a keyword placed at a given offset stays there, and a measured RIR
    with leading silence adds no delay. The tail past the input's end is cut, as it
    would be by the training window. RMS is matched so reverb changes the timbre, not
    the level (level is the gain step's job).
    """
    speech = np.asarray(speech, dtype=np.float64)
    rir = np.asarray(rir, dtype=np.float64)
    if speech.size == 0:
        return speech.astype(np.float32)
    delay = int(np.argmax(np.abs(rir)))
    size = len(speech) + len(rir) - 1
    nfft = 1 << (size - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(speech, nfft) * np.fft.rfft(rir, nfft), nfft)[delay : delay + len(speech)]
    wet_rms = _rms(wet)
    if wet_rms > 0.0:
        wet *= _rms(speech) / wet_rms
    return wet.astype(np.float32)


def random_gain(x: np.ndarray, rng: np.random.Generator, db_range: tuple[float, float] = (-12.0, 6.0)) -> np.ndarray:
    """Scale by a gain drawn uniformly in dB, clipping to [-1, 1] as a real ADC would.

    Positive gains deliberately let loud clips clip, so the encoder also sees the
    distortion of a talker close to the microphone.
    """
    gain = 10.0 ** (rng.uniform(*db_range) / 20.0)
    return np.clip(np.asarray(x, dtype=np.float32) * np.float32(gain), -1.0, 1.0)


def place_in_window(
    speech: np.ndarray, window_samples: int, rng: np.random.Generator, fill: np.ndarray | None = None
) -> np.ndarray:
    """Put ``speech`` at a random position in a window of exactly ``window_samples``.

    This is what makes the encoder position-invariant: the keyword may start anywhere
    in the window. A shorter utterance is copied unchanged at a uniformly random offset
    into ``fill`` (a ``window_samples`` array, zeros if ``None``). A longer one is cropped
    at an offset drawn with probability proportional to the energy inside the crop, so
    crops that keep the loud (spoken) part are favoured and pure-silence crops never
    happen unless the whole clip is silent.
    """
    speech = np.asarray(speech, dtype=np.float32).reshape(-1)
    if len(speech) > window_samples:
        start = _energy_weighted_start(speech, window_samples, rng)
        return speech[start : start + window_samples].copy()
    if fill is None:
        out = np.zeros(window_samples, dtype=np.float32)
    else:
        out = np.array(fill, dtype=np.float32).reshape(-1)
        if len(out) != window_samples:
            raise ValueError(f"fill has {len(out)} samples, the window {window_samples}")
    offset = rng.integers(0, window_samples - len(speech) + 1)
    out[offset : offset + len(speech)] = speech
    return out


def channel_filter(
    x: np.ndarray,
    rng: np.random.Generator,
    lowpass_hz_range: tuple[float, float] = (3400.0, 7600.0),
    highpass_hz_range: tuple[float, float] = (0.0, 300.0),
    sample_rate: int = 16000,
) -> np.ndarray:
    """Pass ``x`` through a random band-pass channel: a cheap microphone, a codec, an 8 kHz recording.

    The encoder otherwise learns that the top mel bands always carry speech: a word recorded
    at 8 kHz (telephone band, many datasets, Bluetooth headsets) then embeds ~6 points of
    accuracy away from the same word at 16 kHz, where the teacher does not move (measured on
    the Speech Commands sample, enrolled full band and queried band-limited). The response is
    zero-phase and smooth (raised-cosine edges over :data:`_CHANNEL_EDGE_HZ`), applied in the
    frequency domain of the whole window; its impulse response is a few ms long, so the
    circular wrap of the FFT is inaudible.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    low = rng.uniform(*highpass_hz_range)
    high = rng.uniform(*lowpass_hz_range)
    frequencies = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    falling = np.clip((high - frequencies) / _CHANNEL_EDGE_HZ, 0.0, 1.0)
    rising = np.clip(frequencies / max(low, 1e-6), 0.0, 1.0)
    response = 0.25 * (1.0 - np.cos(np.pi * falling)) * (1.0 - np.cos(np.pi * rising))
    return np.fft.irfft(np.fft.rfft(x) * response, n=len(x)).astype(np.float32)


def speed_perturb(
    x: np.ndarray, rng: np.random.Generator, factor_range: tuple[float, float] = (0.85, 1.15)
) -> np.ndarray:
    """Play ``x`` faster or slower by a factor drawn from ``factor_range`` (Kaldi-style).

    Resampling 16 kHz to ``16 kHz / factor`` and reading the result back at 16 kHz
    scales pitch, formants and tempo together, as a different talker speaking faster
    would; the output has about ``len(x) / factor`` samples. The target rate is
    rounded to a multiple of 100 Hz so the rational resampler stays small; the factor
    actually applied is within 0.5 % of the drawn one.
    """
    factor = rng.uniform(*factor_range)
    out_rate = round(_SPEED_BASE_RATE / factor / _SPEED_RATE_GRID) * _SPEED_RATE_GRID
    return np.array(resample(np.asarray(x, dtype=np.float32), _SPEED_BASE_RATE, out_rate), dtype=np.float32)


def vtlp_warp_features(
    features: np.ndarray,
    rng: np.random.Generator,
    alpha_range: tuple[float, float] = (0.9, 1.1),
    frontend: FrontendConfig | None = None,
) -> np.ndarray:
    """Vocal-tract-length perturbation of a ``[frames, mels]`` log-mel array.

    Frequencies are warped by ``alpha`` (drawn from ``alpha_range``; above 1 moves
    formants up, like a shorter vocal tract) with the piecewise-linear warp of Jaitly &
    Hinton, which keeps the top band edge fixed. Each output band takes the log-mel
    value interpolated at the band where its centre frequency came from; the band
    centres come from ``frontend`` (the default frontend if ``None``), because a linear
    frequency scaling is not a shift on the mel axis. Done on features rather than the
    waveform since it is a 40-point interpolation per frame and leaves tempo alone.
    """
    features = np.asarray(features, dtype=np.float32)
    frontend = frontend or FrontendConfig()
    alpha = rng.uniform(*alpha_range)
    num_mels = features.shape[1]
    edges_mel = np.linspace(hz_to_mel(frontend.fmin_hz), hz_to_mel(frontend.fmax_hz), num_mels + 2)
    centres_mel = edges_mel[1:-1]
    centres_hz = 700.0 * np.expm1(centres_mel / 1127.0)
    top = frontend.fmax_hz
    knee_out = _VTLP_KNEE_FRACTION * top * min(alpha, 1.0)
    knee_in = knee_out / alpha
    source_hz = np.interp(centres_hz, [0.0, knee_out, top], [0.0, knee_in, top])
    position = np.interp(hz_to_mel(source_hz), centres_mel, np.arange(num_mels))
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, num_mels - 1)
    weight = (position - lower).astype(np.float32)
    return features[:, lower] * (1.0 - weight) + features[:, upper] * weight


def spec_augment(
    features: np.ndarray,
    rng: np.random.Generator,
    time_masks: int = 2,
    time_width: int = 10,
    freq_masks: int = 2,
    freq_width: int = 5,
) -> np.ndarray:
    """SpecAugment masks on a ``[frames, mels]`` log-mel array; returns a masked copy.

    Each mask covers 1 to ``*_width`` consecutive frames (or bands) at a uniform
    position, so the number of masks is exactly the requested count (masks may
    overlap). Masked cells are set to the array's mean, not zero: a log-mel value of
    zero is a loud signal, so zero masks would look like bursts rather than missing
    information.
    """
    out = np.array(features, dtype=np.float32)
    fill = np.float32(out.mean()) if out.size else np.float32(0.0)
    _mask_axis(out, 0, time_masks, time_width, fill, rng)
    _mask_axis(out, 1, freq_masks, freq_width, fill, rng)
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every augmentation; one section of the trainer config.

    Defaults follow common keyword-spotting practice: reverb on 40 % of clips,
    background noise on 80 % at 0-20 dB SNR, a quiet noise floor instead of digital
    silence around the keyword (the device never hears exact zeros).
    """

    speed_probability: float = 0.5
    speed_range: tuple[float, float] = (0.85, 1.15)
    fill_level_db_range: tuple[float, float] = (-70.0, -50.0)
    reverb_probability: float = 0.4
    rt60_range: tuple[float, float] = (0.15, 0.8)
    drr_db_range: tuple[float, float] = (-3.0, 10.0)
    noise_probability: float = 0.8
    snr_db_range: tuple[float, float] = (0.0, 20.0)
    coloured_probability: float = 0.3
    gain_db_range: tuple[float, float] = (-12.0, 6.0)
    # Band-pass channel (see channel_filter); 0 keeps runs made before it existed bit-identical.
    channel_probability: float = 0.0
    channel_lowpass_hz_range: tuple[float, float] = (3400.0, 7600.0)
    channel_highpass_hz_range: tuple[float, float] = (0.0, 300.0)
    vtlp_probability: float = 0.5
    vtlp_alpha_range: tuple[float, float] = (0.9, 1.1)
    time_masks: int = 2
    time_width: int = 10
    freq_masks: int = 2
    freq_width: int = 5
    sample_rate: int = 16000

    def to_dict(self) -> dict:
        """Plain values (ranges as lists) for a JSON/TOML config file."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> AugmentConfig:
        """Build from a config section; missing keys keep their defaults, unknown keys raise.

        Unknown keys raise because a misspelt probability would otherwise be silently
        ignored and the default used.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation settings: {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


class Augmenter:
    """The whole augmentation chain for one training example, driven by an :class:`AugmentConfig`.

    ``noise_bank`` (see :func:`load_noise_bank`) and ``frontend`` are data rather than
    settings, so they are passed in and not part of :meth:`to_dict`.
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        noise_bank: list[np.ndarray] | None = None,
        frontend: FrontendConfig | None = None,
    ) -> None:
        self.config = config or AugmentConfig()
        self.noise_bank = list(noise_bank or [])
        self.frontend = frontend or FrontendConfig()

    @classmethod
    def from_dict(
        cls, values: dict, noise_bank: list[np.ndarray] | None = None, frontend: FrontendConfig | None = None
    ) -> Augmenter:
        return cls(AugmentConfig.from_dict(values), noise_bank, frontend)

    def to_dict(self) -> dict:
        return self.config.to_dict()

    def __call__(self, speech: np.ndarray, window_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Waveform chain: speed -> place in window -> reverb -> [channel] -> background -> [channel] -> gain.

        Placement comes before reverb and noise so the reverb tail spills into the
        window as it would live, and the noise covers the whole window, not just the
        keyword. A drawn channel filter goes, with equal odds, before the background
        (a narrow-band source played into a room) or after it (the microphone itself).
        Returns exactly ``window_samples`` float32 samples in [-1, 1].
        """
        c = self.config
        x = np.asarray(speech, dtype=np.float32)
        if rng.random() < c.speed_probability:
            x = speed_perturb(x, rng, c.speed_range)
        floor = coloured_noise(window_samples, rng) * np.float32(10.0 ** (rng.uniform(*c.fill_level_db_range) / 20.0))
        x = place_in_window(x, window_samples, rng, fill=floor)
        if rng.random() < c.reverb_probability:
            x = reverberate(x, synthetic_rir(rng, c.sample_rate, c.rt60_range, c.drr_db_range))
        # No draw at probability 0, so configs without a channel replay their old episodes.
        channel = c.channel_probability > 0 and rng.random() < c.channel_probability
        channel_first = channel and rng.random() < 0.5
        if channel_first:
            x = self._channel(x, rng)
        if rng.random() < c.noise_probability:
            x = add_background(x, self.noise_bank, rng, c.snr_db_range, c.coloured_probability)
        if channel and not channel_first:
            x = self._channel(x, rng)
        return random_gain(x, rng, c.gain_db_range)

    def _channel(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        return channel_filter(x, rng, c.channel_lowpass_hz_range, c.channel_highpass_hz_range, c.sample_rate)

    def augment_features(self, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Feature chain on ``[frames, mels]`` log-mel: VTLP warp (sometimes), then SpecAugment."""
        c = self.config
        if rng.random() < c.vtlp_probability:
            features = vtlp_warp_features(features, rng, c.vtlp_alpha_range, self.frontend)
        return spec_augment(features, rng, c.time_masks, c.time_width, c.freq_masks, c.freq_width)


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def active_power(speech: np.ndarray) -> float:
    """Mean power over the frames within 40 dB of the loudest 20 ms frame (0 if silent).

    A fixed relative threshold, not a VAD: it needs no tuning per corpus, ignores the
    silence and low noise floor around a keyword, and keeps the quiet consonants that
    a stricter threshold would drop.
    """
    energy = np.square(np.asarray(speech, dtype=np.float64))
    if energy.size == 0:
        return 0.0
    starts = np.arange(0, energy.size, _ACTIVE_FRAME_SAMPLES)
    frame_sums = np.add.reduceat(energy, starts)
    frame_lengths = np.diff(np.append(starts, energy.size))
    frame_power = frame_sums / frame_lengths
    peak = frame_power.max()
    if peak == 0.0:
        return 0.0
    active = frame_power >= peak * 10.0 ** (_ACTIVE_THRESHOLD_DB / 10.0)
    return float(frame_sums[active].sum() / frame_lengths[active].sum())


def _noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``noise`` from a random offset, looping a recording that is too short.

    A long recording is cropped inside its bounds, so no loop seam (a click) appears
    where it is not needed.
    """
    if len(noise) >= length:
        start = rng.integers(0, len(noise) - length + 1)
        return noise[start : start + length]
    start = rng.integers(0, len(noise))
    return noise[(start + np.arange(length)) % len(noise)]


def _early_reflections(length: int, envelope: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A few signed echoes, each following the tail's decay envelope at its delay."""
    count = rng.integers(*_REFLECTION_COUNT)
    low, high = (max(1, int(s * sample_rate)) for s in _REFLECTION_DELAY_S)
    delays = np.minimum(rng.integers(low, high, count), length - 1)
    gains = rng.uniform(*_REFLECTION_GAIN, count) * rng.choice([-1.0, 1.0], count) * envelope[delays]
    reflections = np.zeros(length)
    np.add.at(reflections, delays, gains)
    return reflections


def _energy_weighted_start(speech: np.ndarray, window_samples: int, rng: np.random.Generator) -> int:
    """Crop start drawn with probability proportional to the energy inside the crop."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.square(speech, dtype=np.float64))])
    energy = np.maximum(cumulative[window_samples:] - cumulative[:-window_samples], 0.0)
    total = energy.sum()
    if total <= 0.0:
        return int(rng.integers(len(energy)))
    return int(rng.choice(len(energy), p=energy / total))


def _mask_axis(
    out: np.ndarray, axis: int, count: int, max_width: int, fill: np.float32, rng: np.random.Generator
) -> None:
    """Set ``count`` random runs of 1..``max_width`` indices along ``axis`` of ``out`` to ``fill``, in place."""
    size = out.shape[axis]
    if size == 0 or max_width < 1:
        return
    for _ in range(count):
        width = int(rng.integers(1, min(max_width, size) + 1))
        start = int(rng.integers(0, size - width + 1))
        index = [slice(None)] * out.ndim
        index[axis] = slice(start, start + width)
        out[tuple(index)] = fill
