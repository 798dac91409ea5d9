"""``Spotter``: the Python API under the ``kws`` command, for programs that embed the detector.

    from device import Spotter
    spotter = Spotter(store_dir="~/.local/share/kws")
    spotter.enroll("hey toaster", ["take1.wav", "take2.wav", "take3.wav"])
    for event in spotter.process(chunk):          # mono 16 kHz: float32/float64, int16 or 16-bit PCM bytes
        print(event.keyword, event.time_s, event.score)

One encoder serves every keyword and every stream (``new_stream`` gives an
independent detector state, e.g. one per network client).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from device.audio import read_wav, stream_audio
from device.detector import Detection, DetectorSettings, HopListener, StreamingDetector
from device.encoder import Encoder
from device.enroll import (
    EnrollmentError,
    check_distinct_name,
    check_keyword_name,
    check_language,
    enroll,
    load_negatives,
    save_takes,
    score,
)
from device.false_alarms import (
    StrongestWindow,
    apply_negatives,
    is_own_speech,
    kept_not_files,
    own_speech_window,
    save_not_clips,
    sounds_like,
    stored_windows,
    strongest_window,
)
from device.settings import default_model_path, default_store_dir
from device.store import USER_SETTINGS, Keyword, KeywordStore, TakesWriter

log = logging.getLogger(__name__)


class Spotter:
    """Encoder + keyword store + a default stream."""

    def __init__(
        self,
        store_dir: str | Path | None = None,
        model_path: str | Path | None = None,
        settings: DetectorSettings | None = None,
        num_threads: int = 1,
        check_store: bool = True,
    ) -> None:
        self.encoder = Encoder(Path(model_path or default_model_path()), num_threads=num_threads)
        self.store = KeywordStore(Path(store_dir or default_store_dir()).expanduser())
        if check_store:
            self.store.check_encoder(self.encoder.sha256)
        self.settings = settings or DetectorSettings()
        self._negatives: np.ndarray | None = None
        self._stream = self.new_stream()

    @property
    def sample_rate(self) -> int:
        return self.encoder.manifest.frontend.sample_rate

    @property
    def negatives(self) -> np.ndarray | None:
        if self._negatives is None:
            self._negatives = load_negatives(self.encoder)
        return self._negatives

    def new_stream(self, names: list[str] | None = None, on_hop: HopListener | None = None) -> StreamingDetector:
        """An independent detector over the store's keywords (or only ``names``) that this encoder made.

        ``on_hop`` sees every hop's scores and thresholds (see :class:`~device.detector.StreamingDetector`).
        """
        return StreamingDetector(self.encoder, self._scorable(names), self.settings, on_hop)

    def enroll(
        self,
        name: str,
        takes: list,
        add: bool = False,
        keep_takes: bool = True,
        replace: bool = False,
        not_files: Sequence[str | Path | np.ndarray] = (),
        language: str | None = None,
        speech: Sequence[str | Path | np.ndarray] = (),
    ) -> Keyword:
        """Enroll (or with ``add``, extend) a keyword from wav paths or float arrays at 16 kHz.

        A name already enrolled is refused unless ``add`` (more takes) or ``replace`` (start it
        afresh) says which: a silent replacement used to lose a keyword to a typo'd command.
        ``not_files`` are recordings that must not fire it (see :meth:`teach_not`); ``language`` is
        the BCP 47 tag of the phrase (:func:`device.enroll.check_language`), None to keep what it had.
        ``speech`` is about 10 s of the user's ordinary speech (not the keyword): the same voice saying
        other things is a personal keyword's hardest negative, so its threshold rises above it too
        (:func:`device.false_alarms.own_speech_window`). The kept takes go into a new folder committed
        with the keyword (see :mod:`device.store`), so an interruption at any moment leaves the old
        keyword with its takes or the new one with its takes.
        A name that differs from another keyword's only in case or ``_`` versus space is refused
        (:func:`device.enroll.keyword_key`): the Wyoming server could not tell the two apart.
        """
        check_distinct_name(check_keyword_name(name), self.store.keywords)
        prepared = self.prepare(name, takes, add, keep_takes, replace, not_files, language=language, speech=speech)
        return self.commit([prepared])[0]

    def teach_not(
        self,
        name: str,
        not_files: Sequence[str | Path | np.ndarray],
        speech: Sequence[str | Path | np.ndarray] = (),
    ) -> Keyword:
        """Make recordings that wrongly fired ``name`` (and the user's own ``speech``) its negatives.

        Its threshold moves above them; see :mod:`device.false_alarms`. Their audio (the part around
        the window that scored highest; all of ``speech``) joins the keyword's kept takes when those
        are kept, so ``kws reembed`` and ``--add`` can score them again; the record keeps their scores
        and embeddings either way.
        """
        name = check_keyword_name(name)
        old = self.store.keywords.get(name)
        if old is None:
            have = ", ".join(self.store.names) or "none"
            raise EnrollmentError(f"--not: no keyword {name!r} in {self.store.folder} (have: {have})")
        if old.encoder_sha256 != self.encoder.sha256:
            raise EnrollmentError(f"--not: {name!r} was enrolled with a different encoder; `kws reembed` it first")
        if not not_files and not speech:
            raise EnrollmentError("--not needs at least one recording")
        windows = self._carried_windows(old, old) + self._scan_not(old, not_files, speech)
        keyword = apply_negatives(old, windows, self.negatives)
        writer = None
        takes = self.store.take_files(old)
        if takes and len(takes) == old.takes:
            writer = partial(self._write_takes, takes=[], earlier=takes, windows=windows)
        return self.commit([(keyword, writer)])[0]

    def prepare(
        self,
        name: str,
        takes: list,
        add: bool = False,
        keep_takes: bool = True,
        replace: bool = False,
        not_files: Sequence[str | Path | np.ndarray] = (),
        keep_not: bool | None = None,
        language: str | None = None,
        speech: Sequence[str | Path | np.ndarray] = (),
    ) -> tuple[Keyword, TakesWriter | None]:
        """The keyword ``enroll`` would store and what writes its takes, without storing anything yet.

        Why separate: ``kws reembed`` prepares every keyword first and commits them in one version,
        so a failure half-way changes nothing. With ``add`` the earlier kept takes are copied into the
        new folder; when they are not all there, the takes are not kept at all (a folder holding only
        some of a keyword's takes could not re-embed it).

        ``keep_not`` (default: ``add``) carries the old keyword's --not negatives over, scored
        again against the new prototypes (from their kept audio when there is some, so also
        across encoders: ``kws reembed`` passes it), and with them the user's settings
        (:data:`device.store.USER_SETTINGS`: sensitivity, language), so re-embedding after a model
        update keeps what the user chose; ``replace`` alone starts the keyword afresh.
        """
        name = check_keyword_name(name)
        language = None if language is None else check_language(language)
        labelled = [
            (str(t), read_wav(t, self.sample_rate)) if isinstance(t, (str, Path)) else (f"take {i + 1}", t)
            for i, t in enumerate(takes)
        ]
        previous, earlier = None, []
        old = self.store.keywords.get(name)
        if old is not None and not add and not replace:
            raise EnrollmentError(
                f"{name!r} is already enrolled ({old.takes} takes): add --replace to enroll it afresh "
                f"(replace=True), --add to add these takes to it (add=True), or choose another name"
            )
        if add:
            if old is None:
                raise EnrollmentError(f"--add: no keyword {name!r} yet; enroll it first without --add")
            if old.encoder_sha256 != self.encoder.sha256:
                raise EnrollmentError(f"--add: {name!r} was enrolled with a different encoder; re-enroll it")
            previous = [np.asarray(e, np.float32) for e in old.stats["embeddings"]]
            earlier = self.store.take_files(old)
            if keep_takes and len(earlier) != old.takes:
                log.warning(
                    "%r: %d of its %d earlier takes are kept, so these takes are not kept either "
                    "(re-enroll it to keep takes)",
                    name,
                    len(earlier),
                    old.takes,
                )
                keep_takes = False
        elif old is not None:
            log.info("replacing the existing keyword %r", name)
        keyword, checked = enroll(self.encoder, name, labelled, self.negatives, previous)
        carry = add if keep_not is None else keep_not
        windows = (self._carried_windows(old, keyword) if old is not None and carry else []) + self._scan_not(
            keyword, not_files, speech
        )
        keyword = apply_negatives(keyword, windows, self.negatives)
        if old is not None and carry:
            keyword = dataclasses.replace(keyword, **{k: getattr(old, k) for k in USER_SETTINGS})
        if language is not None:
            keyword = dataclasses.replace(keyword, language=language)
        others = [k for k in self.store.keywords.values() if k.name != name]
        for _, _, message in sounds_like(keyword, others):
            log.warning("%s", message)
        if not keep_takes:
            return keyword, None
        return keyword, partial(self._write_takes, takes=checked, earlier=earlier, windows=windows)

    def _write_takes(self, folder: Path, takes: list, earlier: Sequence[Path], windows: list[StrongestWindow]) -> None:
        """Fill a keyword's new takes folder: earlier takes copied, new takes, then the --not clips."""
        save_takes(folder, takes, self.sample_rate, earlier)
        save_not_clips(folder, windows, self.sample_rate)

    def _scan_not(
        self,
        keyword: Keyword,
        not_files: Sequence[str | Path | np.ndarray],
        speech: Sequence[str | Path | np.ndarray] = (),
    ) -> list[StrongestWindow]:
        """Each --not (then --speech) recording's strongest window against ``keyword`` (files named by path,
        arrays by number)."""
        scans = [(strongest_window, not_files, "--not recording"), (own_speech_window, speech, "recording")]
        return [
            scan(
                self.encoder,
                keyword,
                item,
                str(item) if isinstance(item, (str, Path)) else f"{unnamed} {i + 1}",
                self.settings,
            )
            for scan, items, unnamed in scans
            for i, item in enumerate(items)
        ]

    def _carried_windows(self, old: Keyword, keyword: Keyword) -> list[StrongestWindow]:
        """``old``'s --not negatives scored against ``keyword``: from their kept audio, else their stored embeddings."""
        labels = old.stats.get("not_labels", [])
        if not labels:
            return []
        clips = kept_not_files(self.store.folder / old.takes_dir if old.takes_dir else None)
        if len(clips) == len(labels):
            return [
                dataclasses.replace(
                    (own_speech_window if is_own_speech(label) else strongest_window)(
                        self.encoder, keyword, clip, label, self.settings
                    ),
                    label=label,
                )
                for clip, label in zip(clips, labels, strict=True)
            ]
        if old.encoder_sha256 != self.encoder.sha256:
            log.warning(
                "%r: its %d --not recordings were not kept and were made by another encoder: teach them again "
                "with `kws set %s --not FILE...`",
                old.name,
                len(labels),
                old.name,
            )
            return []
        prototypes = keyword.prototype_matrix()
        return [
            dataclasses.replace(window, score=float(score(prototypes, window.embedding)[0]))
            for window in stored_windows(old)
        ]

    def commit(self, prepared: list[tuple[Keyword, TakesWriter | None]]) -> list[Keyword]:
        """Store prepared keywords (and their takes) in one store version; return them as stored."""
        stored = self.store.put_many(prepared)
        self._stream.set_keywords(self._scorable())
        return stored

    def remove(self, name: str) -> None:
        self.store.remove(name)
        self._stream.set_keywords(self._scorable())

    def _scorable(self, names: list[str] | None = None) -> list[Keyword]:
        """The keywords this encoder made (or only ``names``): another encoder's prototypes are meaningless
        here and may not even have this encoder's size, which would break every stream."""
        return [
            k
            for k in self.store.keywords.values()
            if k.encoder_sha256 == self.encoder.sha256 and (names is None or k.name in names)
        ]

    def process(self, samples: np.ndarray | bytes | bytearray | memoryview) -> list[Detection]:
        """Feed the default stream; return detections.

        Mono at ``sample_rate``: float32/float64 in [-1, 1], int16 (scaled by 1/32768) or 16-bit
        little-endian PCM bytes, as openWakeWord's ``predict`` takes; anything else (2-D, int32,
        an odd byte count) is refused with a message saying what was given.
        """
        return self._stream.process(samples)

    def detect_file(
        self, path: str | Path, chunk_seconds: float = 0.1, on_hop: HopListener | None = None
    ) -> list[Detection]:
        """Run a fresh stream over a recording in ``chunk_seconds`` chunks, as if it were live.

        The file is read and resampled block by block (:func:`~device.audio.stream_audio`), so memory
        does not grow with its length. The chunk size does not change the result (the detector's runs
        sit at fixed stream positions), so this predicts what a live stream or the server reports.
        """
        stream = self.new_stream(on_hop=on_hop)
        chunk = max(1, int(chunk_seconds * self.sample_rate))
        events: list[Detection] = []
        pending = np.zeros(0, np.float32)
        for piece in stream_audio(path, self.sample_rate):
            pending = np.concatenate([pending, piece])
            whole = len(pending) - len(pending) % chunk
            for start in range(0, whole, chunk):
                events += stream.process(pending[start : start + chunk])
            pending = pending[whole:]
        if len(pending):
            events += stream.process(pending)
        # A second of silence at the end lets a word at the very end of the file complete its window.
        events += stream.process(np.zeros(self.sample_rate, np.float32))
        return events
