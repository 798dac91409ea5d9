"""kws: enroll wake words from a few takes and detect them, on a Raspberry Pi or any Linux box.

quick start:
  kws enroll "hey toaster"                  # record 5 takes from the microphone
  kws listen --on-detect 'notify-send "$KWS_KEYWORD"'
  kws enroll "lights on" take1.wav take2.wav take3.wav
  kws detect recording.wav --json
  kws set "lights on" --sensitivity 0.7     # more detections (and false alarms); 0.5 = as calibrated
  kws detect recording.wav --scores         # every hop's score and threshold, to see why

Keywords live in a store folder (default ~/.local/share/kws, see --store); the
encoder model defaults to $KWS_MODEL or the shipped firmware_models/encoder.tflite.
An optional config file (~/.config/kws/config.toml or $KWS_CONFIG, see --config)
sets defaults; options on the command line win over it. Global options may be
given before or after the command. `kws COMMAND --help` explains each command.

exit status (every command, the daemons included):
  0    success; also when nothing was detected, and a daemon stopped by SIGTERM or Ctrl-C
  1    runtime failure: the model, the keyword store, the microphone, the network
       address (taken, not allowed), a missing optional package
  2    bad input: a wrong option or argument, a keyword name that is not allowed, a
       rejected take, an unreadable wav, a --store that is not a folder, a bad --uri
  130  a one-shot command interrupted by Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import numpy as np

log = logging.getLogger("kws")

PROG = "kws"

EXIT_FAILURE, EXIT_USAGE = 1, 2
# `kws listen --save`: as device.clips (which cli cannot import before the command is chosen; a test keeps them equal)
DEFAULT_SAVE_MARGIN, DEFAULT_SAVE_MAX = 0.05, 200
RECORD_SPEECH = object()  # `--speech` without FILE: record it from the microphone
SPEECH_RECORD_SECONDS = 12.0


class UsageError(ValueError):
    """Bad input from the user (exit status 2)."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# -- help texts (description + examples, shown by `kws COMMAND --help`) -------------------------------

SENSITIVITY_HELP = """\
sensitivity (0..1, as Porcupine's): higher = more detections and more false alarms;
0.5 is the threshold enrollment calibrated. Each 0.1 doubles (above 0.5) or halves
(below) how many of the model's negative-bank windows (~28,000: other words, talk,
noise) pass the keyword's threshold, so a setting costs every keyword about the same.
Measured (scripts/sensitivity_cost.py: 8 keywords enrolled from espeak takes, 5.4 min
of espeak talk by 5 other voices): 0.3 raises thresholds by 0.048 (median), passes
0.19x the bank windows of 0.5 and gave 1 false alarm where 0.5 gave 12; 0.7 lowers
them by 0.075, passes 4.4x the windows and gave 30 (0.9: 82).
Order: --sensitivity on the command, else the keyword's own (`kws set`), else
[detector] sensitivity in the config file, else 0.5.
"""

AUDIO_FILES = """\
audio files: wav (8/16/24/32-bit PCM or float, WAVE_FORMAT_EXTENSIBLE), FLAC,
Ogg Vorbis/Opus, MP3, AIFF (anything libsndfile reads); any rate, any channels
(averaged). Other formats: convert first, e.g. `sox in.m4a -r 16000 out.wav`.
"""

ENROLL_HELP = f"""\
Enroll a keyword from a few takes of you saying it (3 to 10 takes).

With audio files, each file is one take (formats below). Without files,
the takes are recorded from the microphone: after a short quiet moment to measure
the room, each take is prompted; speak after the prompt and stop; recording ends
by itself after ~0.6 s of silence (or 3 s at most).

Every take is checked (silent, clipped, too short, too long, unlike the others);
a rejected take is named with the reason, and nothing is stored (exit status 2).
From the microphone, each take is checked as it is recorded (level, speech length,
likeness to the takes so far) and only that take is asked for again.

A name already enrolled is refused (exit status 2) unless --add (more takes) or
--replace (enroll it afresh, dropping its --not recordings) says which. A keyword
that sounds like another enrolled one (its prototype as close as their thresholds)
is enrolled with a warning naming the other: choose a more distinct phrase.

--not FILE... (after the takes) names recordings that must not fire it (a TV
phrase, a look-alike name): each is scanned as the detector would hear it, and
the threshold moves above the best-scoring one (see `kws set --help`).

--speech FILE gives about 10 s of your ordinary speech (you, talking about
anything but the keyword, into the same microphone): the same voice saying
other things is what a personal wake word most often fires on, so it is taught
as "not this" too, and the threshold rises above your own other words. Without
FILE it is recorded from the microphone after the takes (speak for ~10 s when
asked). At least 5 s; only the first 60 s are used.

{AUDIO_FILES}
examples:
  kws enroll "hey toaster"                          # 5 takes from the microphone
  kws enroll "hey toaster" --takes 8 --device 2     # 8 takes from input device 2
  kws enroll "lights on" a.wav b.wav c.wav d.wav    # from recordings
  kws enroll "lights on" e.wav f.wav --add          # add takes to an existing keyword
  kws enroll "lights on" a.wav b.wav c.wav --replace   # enroll it afresh
  kws enroll "hey jasper" a.wav b.wav c.wav --not tv.wav jasmine.wav
  kws enroll "hey jasper" a.wav b.wav c.wav --speech me-talking.wav
  kws enroll "hey toaster" --speech                 # takes, then 10 s of your speech, from the microphone
  kws enroll "hey toaster" --no-keep-takes          # do not keep the audio in the store
  kws enroll "hej brødrister" --language da         # the phrase's language, for Home Assistant
"""

DETECT_HELP = f"""\
Run the detector over a recording as if it were live, and print the detections.

One line per detection: "time_s<TAB>keyword<TAB>score", where time_s is the end of
the detected word in seconds from the start of the file. With --json, one JSON
object per line: {{"keyword": str, "time_s": float, "score": float}}. Exits 0 also
when nothing is detected. The file is read in blocks, so its length does not
matter (hours are fine).

The file gives exactly the events `kws listen` and `kws serve` would report for
the same audio (scores do not depend on how the audio is chunked). An event
carries the utterance's peak score; when several keywords pass on one utterance,
only the one furthest over its threshold is reported.

--scores prints every hop instead (one per keyword every 0.1 s): a header, then
"time_s<TAB>keyword<TAB>score<TAB>threshold" rows, then the detections as
"# detected<TAB>time_s<TAB>keyword<TAB>score" lines; with --json, JSON lines
{{"event": "score", "time_s", "keyword", "score", "threshold"}} and
{{"event": "detection", "time_s", "keyword", "score"}}. --plot FILE.png draws
every keyword's score over time with its threshold and the detections (needs
matplotlib: pip install 'fewshot-kws[plot]').

{SENSITIVITY_HELP}
{AUDIO_FILES}
examples:
  kws detect kitchen.wav
  kws detect kitchen.wav --json | jq -r .keyword
  kws detect kitchen.wav --sensitivity 0.7          # every keyword more sensitive, this run only
  kws detect kitchen.wav --scores | awk '$3 > $4'   # the hops over their threshold
  kws detect kitchen.wav --plot kitchen.png
"""

LISTEN_HELP = f"""\
Listen to the microphone and report keywords as they are spoken (the daemon).

Events go to stdout (--json: one JSON object per line with keyword, time_s,
score and a unix timestamp); logs go to stderr. --on-detect runs a shell command
for each event without waiting for it, with KWS_KEYWORD, KWS_SCORE and KWS_TIME
set in its environment; at most 4 run at once (an event that finds 4 still
running is logged and its command skipped), and on exit the ones still running,
with what they started, get SIGTERM, then SIGKILL 2 s later. A microphone that disappears is reopened with back-off
(0.5 s doubling to 30 s); keywords enrolled meanwhile are picked up within ~2 s.
Ctrl-C or SIGTERM stops it (exit 0). The config file's [listen] table may set
device and on_detect.

Test/demo hook: KWS_FAKE_INPUT=file.wav replaces the microphone with the file,
played in real time (KWS_FAKE_INPUT_SPEED=10 plays it 10x faster); at the end of
the file the "device" disappears and is reopened, replaying the file
(KWS_FAKE_INPUT_LOOP=1 loops without a gap instead).

--debug prints, on stderr, every hop where a keyword scores within 0.2 of its
threshold (time, keyword, score, threshold; PASS when over it): how close a
missed word came, or what a false alarm scored.

--save DIR keeps the audio of every detection and every near miss (a keyword
scoring within --save-margin, 0.05, under its threshold): 2 s before the event
and 0.5 s after, as DIR/kws-TIME-KEYWORD-KIND-scoreS-thrT-tSECONDS.wav with a
.json beside it (kind, keyword, score, threshold, time_s, timestamp). The newest
--save-max (200) clips are kept, older ones deleted (logged). Listen to them, then
`kws set NAME --not CLIP.wav` (a false alarm) or `kws enroll NAME CLIP.wav --add`
(a miss).

{SENSITIVITY_HELP}
examples:
  kws listen
  kws listen --device 2 --json
  kws listen --sensitivity 0.6 --debug    # a bit more sensitive, and show the near misses
  kws listen --save ~/kws-clips           # keep what fired and what nearly did
  kws listen --on-detect 'mosquitto_pub -t kws -m "$KWS_KEYWORD $KWS_SCORE"'
  KWS_FAKE_INPUT=demo.wav kws listen --json
"""

SET_HELP = f"""\
Change how an enrolled keyword is detected, without enrolling it again.
A running `kws listen` or `kws serve` picks the change up within ~2 s.

--not FILE... teaches it "not this": recordings that wrongly fired it (a clip
`kws listen --save` kept, a TV phrase, a look-alike name). Each file is scanned
with the detector's own windows; its score is the best hop (a false alarm comes
from some window of it), and the keyword's threshold moves 0.03 above the highest
such score, but never closer than 0.02 to its takes' lowest score, so the word
itself still fires. A file that scores as high as the takes sounds like the
keyword itself, and is reported as such. Scores, embeddings and (when takes are
kept) the audio around the best window are stored with the keyword; --add and
`kws reembed` score them again, --replace drops them. A sensitivity above 0.5
lowers the threshold again, under them.

--speech FILE does the same with about 10 s of your ordinary speech (see
`kws enroll --help`); without FILE it is recorded from the microphone.

{SENSITIVITY_HELP}
examples:
  kws set "hey toaster" --sensitivity 0.7       # fires more readily (more false alarms)
  kws set "hey toaster" --sensitivity 0.3       # fires less readily (more misses)
  kws set "hey toaster" --sensitivity default   # back to the config's default
  kws set "hola tostadora" --language es        # what `kws serve` tells Home Assistant
  kws set "hey toaster" --not tv-ad.wav kws-clips/kws-20261205-*-hey_toaster-detection-*.wav
  kws set "hey toaster" --speech me-talking.wav   # my own voice saying other things
"""

LIST_HELP = """\
List the enrolled keywords: name, takes, threshold, prototypes and the encoder
(sha256 prefix) that made them; "STALE" marks keywords made by another encoder
than the current model.

examples:
  kws list
  kws list --json
"""

REMOVE_HELP = """\
Remove a keyword (and its kept takes) from the store. A running `kws listen`
stops detecting it within ~2 s.

examples:
  kws remove "hey toaster"
"""

REEMBED_HELP = """\
Re-compute keywords with the current model from their kept takes, after the
model changed (the store refuses keywords made by another encoder). Keywords
enrolled with --no-keep-takes cannot be re-embedded: enroll them again.

examples:
  kws reembed
  kws --model new/encoder.tflite reembed
"""

DEVICES_HELP = """\
List the audio input devices (index, name, channels, default rate); pass the
index or a part of the name to --device. Exits 1 when PortAudio is missing or
there is no input device.

examples:
  kws devices
"""

EMBED_HELP = f"""\
Print each file's embedding exactly as enrollment computes it (trimmed, centred
in the encoder's window, averaged with copies under pink noise at 10/15/20 dB
SNR): an L2-normalised vector of the model's embedding size.
With --json, one object per line: {{"file": str, "embedding": [float, ...]}}.

{AUDIO_FILES}
examples:
  kws embed take1.wav take2.wav --json
"""

SERVE_HELP = f"""\
Serve wake-word detection over the Wyoming protocol (Home Assistant, Rhasspy):
clients stream audio, the server sends detections of the enrolled keywords.

Limits, so that no client can exhaust the server: an event of more than 256 KiB
(an audio chunk; clients send ~2 KiB) is dropped with an error event; a connection
with no complete event for --idle-timeout seconds is closed; at most
--max-connections are served at once (one more closes the longest-idle connection,
idle over 1 s, or is refused). Exit status: 0 after SIGTERM/Ctrl-C, 1 when the
model, the store or the address cannot be used, 2 for a bad --uri or limit.

{SENSITIVITY_HELP}
examples:
  kws serve
  kws serve --sensitivity 0.6                   # every keyword a bit more sensitive
  kws serve --uri tcp://127.0.0.1:10400 --zeroconf
"""


def sensitivity_value(text: str) -> float:
    """argparse type for --sensitivity: a number in [0, 1] (a clear usage error otherwise)."""
    from device.sensitivity import check_sensitivity

    try:
        return check_sensitivity(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: a number between 0 and 1 (0.5 = as calibrated)") from error


def language_value(text: str) -> str | None:
    """argparse type for ``--language``: a BCP 47 tag (as it is usually cased), or "none" to clear it."""
    from device.enroll import EnrollmentError, check_language

    if text.strip().lower() == "none":
        return None
    try:
        return check_language(text)
    except EnrollmentError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def stored_sensitivity_value(text: str) -> float | None:
    """argparse type for `kws set --sensitivity`: a number in [0, 1], or "default" to clear it."""
    return None if text.strip().lower() == "default" else sensitivity_value(text)


class _VersionAction(argparse.Action):
    """``--version``: the package version and the encoder's id, computed only when asked for.

    Why not ``action="version"``: its text is built with the parser, which would read the
    manifest and hash the model on every command. The encoder is the default one
    ($KWS_MODEL or the shipped model); ``kws --model M list`` shows another's id.
    """

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from device.about import NotInstalledError, version_text
        from device.settings import default_model_path

        try:
            text = version_text(default_model_path())
        except NotInstalledError as error:
            parser.exit(EXIT_FAILURE, f"{PROG}: error: {error}\n")
        print(text)  # stdout, as argparse's own version action does: `kws --version | head -1` works
        parser.exit(0)


def add_speech_argument(parser: argparse.ArgumentParser) -> None:
    """``--speech [FILE]`` of enroll and set: a file, or with no FILE :data:`RECORD_SPEECH` (record it)."""
    parser.add_argument(
        "--speech",
        metavar="FILE",
        nargs="?",
        type=Path,
        const=RECORD_SPEECH,
        help="~10 s of your ordinary speech, taught as not it (no FILE: record it)",
    )


def build_parser() -> argparse.ArgumentParser:
    # Global options live on a parent parser shared by the top level and every command, with
    # SUPPRESS defaults, so `kws --store X list` and `kws list --store X` both work.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--store", type=Path, metavar="DIR", default=argparse.SUPPRESS, help="keyword store folder")
    group.add_argument("--model", type=Path, metavar="PATH", default=argparse.SUPPRESS, help="encoder .tflite")
    group.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="config file (TOML)")
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (repeat for debug)"
    )

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=_formatter, parents=[common])
    parser.add_argument("--version", action=_VersionAction, help="print the version and the encoder's id, then exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=text, formatter_class=_formatter, parents=[common], prog=f"{PROG} {name}"
        )

    p = command("enroll", ENROLL_HELP, "enroll a keyword from takes (audio files or the microphone)")
    p.add_argument("name", metavar="NAME", help="the keyword, e.g. 'hey toaster' (how events will name it)")
    p.add_argument("wavs", metavar="WAV", nargs="*", type=Path, help="takes as audio files (none: record)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--add", action="store_true", help="add these takes to an existing keyword")
    how.add_argument("--replace", action="store_true", help="enroll an existing keyword afresh (drops its --not)")
    p.add_argument(
        "--not",
        dest="not_files",
        metavar="FILE",
        nargs="+",
        type=Path,
        default=[],
        help="recordings that must not fire it (they raise its threshold)",
    )
    add_speech_argument(p)
    p.add_argument(
        "--language",
        type=language_value,
        metavar="TAG",
        help="the phrase's language as a BCP 47 tag (en, de, pt-BR), reported to Home Assistant",
    )
    p.add_argument("--no-keep-takes", action="store_true", help="do not keep the takes' audio in the store")
    p.add_argument("--takes", type=int, default=5, metavar="N", help="takes to record from the microphone (5)")
    p.add_argument("--device", metavar="N", help="input device index or name part (see `kws devices`)")

    p = command("detect", DETECT_HELP, "detect keywords in an audio file")
    p.add_argument("wav", metavar="WAV", type=Path, help="recording to scan (any format above)")
    p.add_argument("--json", action="store_true", help="one JSON object per detection (or per score row)")
    p.add_argument("--scores", action="store_true", help="print every hop's score and threshold per keyword")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw scores, thresholds and detections to PNG")
    p.add_argument("--sensitivity", type=sensitivity_value, metavar="S", help="0..1 for every keyword, this run")

    p = command("listen", LISTEN_HELP, "detect keywords on the microphone (daemon)")
    p.add_argument("--device", metavar="N", help="input device index or name part (see `kws devices`)")
    p.add_argument("--on-detect", metavar="CMD", help="shell command run per event ($KWS_KEYWORD, ...)")
    p.add_argument("--json", action="store_true", help="events as JSON lines")
    p.add_argument("--sensitivity", type=sensitivity_value, metavar="S", help="0..1 for every keyword, this run")
    p.add_argument("--debug", action="store_true", help="print live scores near their threshold to stderr")
    p.add_argument("--save", type=Path, metavar="DIR", help="keep the audio of detections and near misses in DIR")
    p.add_argument(
        "--save-margin",
        type=float,
        default=DEFAULT_SAVE_MARGIN,
        metavar="M",
        help=f"a near miss scores within M under the threshold ({DEFAULT_SAVE_MARGIN})",
    )
    p.add_argument(
        "--save-max",
        type=int,
        default=DEFAULT_SAVE_MAX,
        metavar="N",
        help=f"keep the newest N clips in DIR, deleting older ones ({DEFAULT_SAVE_MAX})",
    )

    p = command("set", SET_HELP, "change an enrolled keyword's sensitivity, or teach it what is not it")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--sensitivity",
        dest="stored_sensitivity",
        type=stored_sensitivity_value,
        metavar="S",
        default=argparse.SUPPRESS,  # absent, not None: None is "default", which clears it
        help="0..1 (0.5 = as calibrated, higher = more sensitive), or 'default'",
    )
    p.add_argument(
        "--language",
        dest="stored_language",
        type=language_value,
        metavar="TAG",
        default=argparse.SUPPRESS,  # absent, not None: None clears it
        help="the phrase's language as a BCP 47 tag (en, pt-BR), or 'none'",
    )
    p.add_argument(
        "--not",
        dest="not_files",
        metavar="FILE",
        nargs="+",
        type=Path,
        default=[],
        help="recordings that wrongly fired it: its threshold moves above them",
    )
    add_speech_argument(p)

    p = command("list", LIST_HELP, "list enrolled keywords")
    p.add_argument("--json", action="store_true", help="one JSON object per keyword")

    p = command("remove", REMOVE_HELP, "remove a keyword")
    p.add_argument("name", metavar="NAME")

    command("reembed", REEMBED_HELP, "re-embed kept takes with the current model")
    command("devices", DEVICES_HELP, "list audio input devices")

    p = command("embed", EMBED_HELP, "print embeddings of audio files")
    p.add_argument("wavs", metavar="WAV", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per file")

    p = command("serve", SERVE_HELP, "serve detection over the Wyoming protocol")
    p.add_argument("--uri", default="tcp://0.0.0.0:10400", help="where to listen (tcp://0.0.0.0:10400)")
    p.add_argument("--zeroconf", action="store_true", help="announce the service on the local network")
    # Defaults as device.wyoming_server's (a test keeps them equal); cli cannot import it without `wyoming`.
    p.add_argument(
        "--idle-timeout", type=float, default=60.0, metavar="S", help="close connections idle for S seconds (60)"
    )
    p.add_argument("--max-connections", type=int, default=64, metavar="N", help="connections served at once (64)")
    p.add_argument("--sensitivity", type=sensitivity_value, metavar="S", help="0..1 for every keyword, this run")
    return parser


# -- commands ------------------------------------------------------------------------------------------


def _spotter(args: argparse.Namespace, check_store: bool = True):
    from device.spotter import Spotter

    return Spotter(args.store_dir, args.model_path, args.settings.detector, check_store=check_store)


def cmd_enroll(args: argparse.Namespace, out: TextIO) -> int:
    from device.enroll import MAX_TAKES, MIN_TAKES, EnrollmentError, check_distinct_name, check_keyword_name

    name = check_keyword_name(args.name)
    low = 1 if args.add else MIN_TAKES
    if not args.wavs and not low <= args.takes <= MAX_TAKES:
        raise UsageError(f"--takes must be between {low} and {MAX_TAKES}, got {args.takes}")
    spotter = _spotter(args, check_store=False)
    check_distinct_name(name, spotter.store.keywords)  # before recording takes that could not be kept
    sha = spotter.encoder.sha256
    existing = spotter.store.keywords.get(name)
    if existing is not None and not (args.add or args.replace):  # before recording takes that would be refused
        raise EnrollmentError(
            f"{name!r} is already enrolled ({existing.takes} takes): add --replace to enroll it afresh, "
            "--add to add these takes to it, or choose another name"
        )
    if args.add and existing is not None and existing.encoder_sha256 != sha:
        raise EnrollmentError(
            f"--add: {name!r} was enrolled with a different encoder; re-enroll it without --add "
            "(or `kws reembed` first if its takes were kept)"
        )
    stale = sorted(k.name for k in spotter.store.keywords.values() if k.encoder_sha256 != sha and k.name != name)
    if stale:
        log.warning("keywords %s were enrolled with another encoder: re-enroll them too", ", ".join(stale))
    if args.wavs:
        takes: list = list(args.wavs)
        speech = _speech(args, spotter)
    else:
        device = args.device if args.device is not None else args.settings.listen.get("device")
        with_speech = args.speech is RECORD_SPEECH  # recorded right after the takes, on the same microphone
        takes, speech = record_takes(spotter, name, args.takes, device, sys.stderr, with_speech)
        speech = speech if with_speech else _speech(args, spotter)
    keep = args.settings.keep_takes and not args.no_keep_takes
    keyword = spotter.enroll(
        name,
        takes,
        add=args.add,
        keep_takes=keep,
        replace=args.replace,
        not_files=list(args.not_files),
        language=args.language,
        speech=speech,
    )
    stats = keyword.stats
    prototypes = len(keyword.prototypes)
    print(
        f"enrolled {keyword.name!r}: {keyword.takes} takes, threshold {keyword.threshold:.3f}, "
        f"{prototypes} prototype{'' if prototypes == 1 else 's'} (store {spotter.store.folder})",
        file=out,
    )
    details = [f"take scores (leave-one-out) {stats.get('take_scores_loo')}"]
    if "negative_closest" in stats:
        closest, ordinary = stats["negative_closest"], stats["negative_mean"]
        details.append(f"closest non-keyword words {closest}, ordinary speech {ordinary}")
    log.info("%s", "; ".join(details))
    if "warning" in stats:
        print(f"warning: {stats['warning']}", file=sys.stderr)
    _report_not(keyword, out)
    return 0


def _speech(args: argparse.Namespace, spotter) -> list:
    """The --speech recording: the file named, or ~10 s recorded from the microphone; none without --speech."""
    if args.speech is None:
        return []
    if args.speech is not RECORD_SPEECH:
        return [args.speech]
    from device.microphone import TakeRecorder, parse_device

    device = args.device if getattr(args, "device", None) is not None else args.settings.listen.get("device")
    print("Now about 10 s of your ordinary speech. Quiet for a moment while the room is measured...", file=sys.stderr)
    with TakeRecorder(spotter.sample_rate, parse_device(device), out=sys.stderr) as recorder:
        return [record_speech(recorder, sys.stderr)]


def record_speech(recorder, err: TextIO) -> np.ndarray:
    """About 10 s of the user talking (anything but the keyword), from an open recorder, for --speech."""
    print(
        "Now talk for about 10 s about anything but the keyword (count, describe the room, read aloud); "
        "it stops after 12 s or 2.5 s of silence",
        file=err,
        flush=True,
    )
    audio = recorder.record(max_seconds=SPEECH_RECORD_SECONDS, silence_seconds=2.5, wait_seconds=8.0)
    print(f"  recorded {len(audio) / recorder.samplerate:.1f} s of your speech", file=err)
    return audio


RECORD_ATTEMPTS = 3  # tries per take from the microphone before enrollment gives up
RECHECK_ROUNDS = 2  # times the finished set may ask again for takes unlike the rest


def record_takes(
    spotter, name: str, count: int, device: str | None, err: TextIO, with_speech: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Record ``count`` takes, checking each as it comes and asking again for that take only; then, with
    ``with_speech``, the user's ordinary speech for --speech (returned as a list of none or one recording).

    Each take is checked for level and speech length (:func:`device.enroll.check_take`) and for
    likeness to the takes accepted so far (the rule enrollment's outlier check uses), so one bad
    take costs one more take, not the whole set. A take that fails :data:`RECORD_ATTEMPTS` times
    ends the enrollment with its reason. Once all are in, a take unlike the rest as a whole (the
    first takes can only be compared with fewer) is asked for again, up to :data:`RECHECK_ROUNDS`.
    """
    from device.enroll import (
        EnrollmentError,
        check_take,
        enrollment_embedding,
        find_outliers,
        likeness_bar,
        speech_seconds,
    )
    from device.microphone import TakeRecorder, parse_device

    rate = spotter.sample_rate
    max_seconds = spotter.encoder.window_samples / rate
    negatives = spotter.negatives
    takes: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []

    def record_one(recorder: TakeRecorder, index: int, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        attempt = 0
        while True:
            attempt += 1
            print(f"Take {index}/{count}: say {name!r} now\u2026", file=err, flush=True)
            audio = recorder.record()
            try:
                speech = check_take(audio, f"take {index}", max_seconds, rate)
                embedding = enrollment_embedding(spotter.encoder, speech)
                if others:
                    mean = np.mean(others, axis=0)
                    mean /= np.linalg.norm(mean) + 1e-12
                    likeness, bar = float(embedding @ mean), likeness_bar(mean, negatives)
                    if likeness < bar:
                        raise EnrollmentError(
                            f"take {index}: does not sound like the takes so far (likeness {likeness:.2f}, "
                            f"needs {bar:.2f}); say {name!r} the same way each time"
                        )
            except EnrollmentError as error:
                if attempt == RECORD_ATTEMPTS:
                    raise
                print(f"  rejected: {error}; again please", file=err)
                continue
            print(f"  ok ({speech_seconds(audio, rate):.1f} s of speech)", file=err)
            return audio, embedding

    print(f"Recording {count} takes of {name!r}. Quiet for a moment while the room is measured...", file=err)
    with TakeRecorder(rate, parse_device(device), out=err) as recorder:
        for index in range(1, count + 1):
            audio, embedding = record_one(recorder, index, embeddings)
            takes.append(audio)
            embeddings.append(embedding)
        for _ in range(RECHECK_ROUNDS):
            outliers = find_outliers(np.stack(embeddings), negatives) if len(embeddings) >= 3 else []
            if not outliers:
                break
            for i in outliers:
                print(f"Take {i + 1} does not sound like the others; once more please", file=err)
                others = embeddings[:i] + embeddings[i + 1 :]
                takes[i], embeddings[i] = record_one(recorder, i + 1, others)
        speech = [record_speech(recorder, err)] if with_speech else []
    return takes, speech


def cmd_detect(args: argparse.Namespace, out: TextIO) -> int:
    spotter = _spotter(args)
    if not spotter.store.keywords:
        raise UsageError(f"no keywords enrolled in {spotter.store.folder}; enroll one with `kws enroll NAME`")
    if args.plot is not None:
        pyplot = _pyplot()  # before the file is scanned: a missing matplotlib should not cost an hour's run
    names = [k.name for k in spotter.new_stream().keywords]
    hops: list[tuple[float, np.ndarray, np.ndarray]] = []

    header = ["time_s\tkeyword\tscore\tthreshold"] if args.scores and not args.json else []

    def print_header() -> None:
        """The TSV header once, at the first row: a file that cannot be read prints only its error."""
        if header:
            print(header.pop(), file=out)

    def on_hop(now: float, scores: np.ndarray, thresholds: np.ndarray) -> None:
        print_header()
        if args.scores:
            for name, score, threshold in zip(names, scores, thresholds, strict=True):
                if args.json:
                    row = {"event": "score", "time_s": round(now, 3), "keyword": name}
                    print(
                        json.dumps(row | {"score": round(float(score), 4), "threshold": round(float(threshold), 4)}),
                        file=out,
                    )
                else:
                    print(f"{now:.2f}\t{name}\t{score:.4f}\t{threshold:.4f}", file=out)
        if args.plot is not None:
            hops.append((now, scores.copy(), thresholds.copy()))

    listener = on_hop if args.scores or args.plot is not None else None
    detections = spotter.detect_file(args.wav, on_hop=listener)
    print_header()  # a file too short for one hop still gets its header
    for detection in detections:
        if args.json:
            print(json.dumps(({"event": "detection"} if args.scores else {}) | detection.to_dict()), file=out)
        else:
            prefix = "# detected\t" if args.scores else ""
            print(f"{prefix}{detection.time_s:.2f}\t{detection.keyword}\t{detection.score:.3f}", file=out)
    if args.plot is not None:
        plot_scores(pyplot, args.plot, names, hops, detections, title=args.wav.name)
        log.info("plot written to %s", args.plot)
    return 0


def _pyplot():
    """matplotlib's pyplot on a file-only backend, or ModuleNotFoundError saying how to install it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ModuleNotFoundError(
            "--plot draws with matplotlib: pip install 'fewshot-kws[plot]' (or pip install matplotlib)",
            name="matplotlib",
        ) from error
    matplotlib.use("Agg")  # no display needed (a Pi over ssh)
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_scores(pyplot, path: Path, names: list[str], hops: list, detections: list, title: str = "") -> None:
    """Every keyword's smoothed score over time, its threshold (dashed) and its detections (dots at the peak score)."""
    figure, axes = pyplot.subplots(figsize=(12, 4), dpi=100)
    times = np.array([h[0] for h in hops])
    scores = np.array([h[1] for h in hops]).reshape(len(hops), len(names))
    thresholds = np.array([h[2] for h in hops]).reshape(len(hops), len(names))
    for k, name in enumerate(names):
        (line,) = axes.plot(times, scores[:, k], linewidth=1, label=name)
        axes.plot(times, thresholds[:, k], linestyle="--", linewidth=0.8, color=line.get_color())
        fired = [d for d in detections if d.keyword == name]
        if fired:
            axes.plot([d.time_s for d in fired], [d.score for d in fired], "o", color=line.get_color())
    axes.set_ylabel("score; dashed: threshold; dots: detections")
    axes.set_xlabel("time (s): scores at the end of each window, detections at the end of the word")
    axes.set_title(title)
    if names:
        axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


def cmd_listen(args: argparse.Namespace, out: TextIO) -> int:
    from device.clips import check_save_options
    from device.listen import ListenOptions, listen
    from device.microphone import parse_device

    config = args.settings.listen
    if args.save is not None:
        try:
            check_save_options(args.save, args.save_margin, args.save_max)
        except ValueError as error:
            raise UsageError(str(error)) from error
    options = ListenOptions(
        device=parse_device(args.device if args.device is not None else config.get("device")),
        on_detect=args.on_detect if args.on_detect is not None else config.get("on_detect"),
        json=args.json,
        debug=args.debug,
        save_dir=args.save.expanduser() if args.save is not None else None,
        save_margin=args.save_margin,
        save_max=args.save_max,
    )
    return listen(args.store_dir, args.model_path, args.settings.detector, options, out)


def _model_sha(args: argparse.Namespace) -> str | None:
    """The current model's sha256 from its manifest, or None when there is no usable model."""
    from device.manifest import ModelError, load_manifest

    try:
        return load_manifest(args.model_path).sha256
    except ModelError as error:
        log.info("cannot check keywords against the model: %s", error)
        return None


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    from device.store import KeywordStore

    store = KeywordStore(args.store_dir)
    sha = _model_sha(args)
    keywords = [store.keywords[n] for n in store.names]
    if args.json:
        for k in keywords:
            row = {
                "name": k.name,
                "takes": k.takes,
                "threshold": k.threshold,
                "prototypes": len(k.prototypes),
                "sensitivity": k.sensitivity,  # None: the config's default
                "language": k.language,  # None: not said
                "encoder_sha256": k.encoder_sha256,
                "stale": sha is not None and k.encoder_sha256 != sha,
            }
            print(json.dumps(row), file=out)
        return 0
    if not keywords:
        print(f"no keywords in {store.folder}", file=out)
        return 0
    width = max(7, *(len(k.name) for k in keywords))
    print(f"{'keyword':<{width}}  takes  threshold  prototypes  encoder", file=out)
    for k in keywords:
        stale = "  STALE: enrolled with another encoder, re-enroll" if sha and k.encoder_sha256 != sha else ""
        print(
            f"{k.name:<{width}}  {k.takes:>5}  {k.threshold:>9.3f}  {len(k.prototypes):>10}  "
            f"{k.encoder_sha256[:12]}{stale}",
            file=out,
        )
    return 0


def cmd_set(args: argparse.Namespace, out: TextIO) -> int:
    from device.store import USER_SETTINGS, KeywordStore

    store = KeywordStore(args.store_dir)
    name = unicodedata.normalize("NFC", args.name.strip())  # as enrollment stored it
    if name not in store.keywords:
        raise UsageError(f"no keyword named {name!r} in {store.folder} (have: {', '.join(store.names) or 'none'})")
    settings = {
        setting: getattr(args, f"stored_{setting}") for setting in USER_SETTINGS if hasattr(args, f"stored_{setting}")
    }
    if not settings and not args.not_files and args.speech is None:
        raise UsageError(
            "say what to change: --sensitivity S, --language TAG, --not FILE... and/or --speech FILE "
            "(see `kws set --help`)"
        )
    if args.not_files or args.speech is not None:
        keyword = _teach_not(args, name, out)
    if settings:
        keyword = store.update_settings(name, **settings)
    effective = args.settings.detector.sensitivity_of(keyword)
    threshold = args.settings.detector.threshold_of(keyword)
    source = "its own" if keyword.sensitivity is not None else "the config's default"
    language = f", language {keyword.language}" if keyword.language else ""
    print(f"{name!r}: sensitivity {effective:g} ({source}), threshold {threshold:.3f}{language}", file=out)
    if "negative_tail" not in keyword.stats:
        log.warning(
            "%r was enrolled before calibration kept its negative-score tail: its threshold moves by a fixed "
            "amount per 0.1; enroll it again for the exact mapping",
            name,
        )
    return 0


def _teach_not(args: argparse.Namespace, name: str, out: TextIO):
    """``--not FILE...`` / ``--speech``: negatives of ``name`` (threshold raised above them); return it as stored."""
    spotter = _spotter(args, check_store=False)
    before = spotter.store.keywords[name].threshold
    keyword = spotter.teach_not(name, list(args.not_files), _speech(args, spotter))
    _report_not(keyword, out, before)
    return keyword


def _report_not(keyword, out: TextIO, before: float | None = None) -> None:
    """One line per --not recording (its score) and where the threshold went; the warning, if any."""
    stats = keyword.stats
    if "not_scores" not in stats:
        return
    for label, value in zip(stats["not_labels"], stats["not_scores"], strict=True):
        print(f"  not {label}: scores {value:.3f}", file=out)  # own speech labelled "own speech: FILE"
    moved = f"{before:.3f} -> {keyword.threshold:.3f}" if before is not None else f"{keyword.threshold:.3f}"
    print(
        f"{keyword.name!r}: threshold {moved} (calibrated {stats['calibrated_threshold']:.3f}), "
        f"{len(stats['not_scores'])} recording{'' if len(stats['not_scores']) == 1 else 's'} taught as not it",
        file=out,
    )


def cmd_remove(args: argparse.Namespace, out: TextIO) -> int:
    from device.store import KeywordStore

    store = KeywordStore(args.store_dir)
    name = unicodedata.normalize("NFC", args.name.strip())  # as enrollment stored it
    if name not in store.keywords:
        raise UsageError(f"no keyword named {name!r} in {store.folder} (have: {', '.join(store.names) or 'none'})")
    store.remove(name)
    print(f"removed {name!r}", file=out)
    return 0


def cmd_reembed(args: argparse.Namespace, out: TextIO) -> int:
    """Re-embed every keyword of another encoder from its kept takes, all in one new store version.

    Why one version: keywords committed one by one would leave, after a failure or a crash half-way,
    a store partly from each encoder; all are re-embedded in memory first, and a keyword that cannot
    be changes nothing. Keywords without kept takes are named at the end (exit 1).
    """
    from device.audio import AudioError
    from device.enroll import EnrollmentError
    from device.store import StoreError

    spotter = _spotter(args, check_store=False)
    sha = spotter.encoder.sha256
    stale = [spotter.store.keywords[n] for n in spotter.store.names if spotter.store.keywords[n].encoder_sha256 != sha]
    if not stale:
        print("every keyword already matches the model; nothing to do", file=out)
        return 0
    missing, prepared = [], []
    for keyword in stale:
        takes = spotter.store.take_files(keyword)
        if not takes:
            missing.append(keyword.name)
            continue
        try:
            prepared.append(spotter.prepare(keyword.name, takes, keep_takes=True, replace=True, keep_not=True))
        except (EnrollmentError, AudioError) as error:
            raise StoreError(
                f"cannot re-embed {keyword.name!r} from its kept takes, so nothing was changed: {error}\n"
                f"  enroll it again with `kws enroll {keyword.name!r} ...` (or `kws remove {keyword.name!r}`)"
            ) from error
    for new in spotter.commit(prepared) if prepared else []:
        print(f"re-embedded {new.name!r} from {new.takes} takes: threshold {new.threshold:.3f}", file=out)
    if missing:
        raise StoreError(
            f"no kept takes for {', '.join(missing)}: enroll them again with `kws enroll NAME` (or `kws remove NAME`)"
        )
    return 0


def cmd_devices(args: argparse.Namespace, out: TextIO) -> int:
    from device.microphone import fake_input_path, input_devices

    if fake_input_path():
        print(f"note: KWS_FAKE_INPUT={fake_input_path()} replaces the microphone for listen/enroll", file=out)
    devices = input_devices()
    if not devices:
        from device.microphone import MicrophoneError

        raise MicrophoneError("no audio input device found; plug in a microphone (and check `arecord -l`)")
    for d in devices:
        mark = "  (default)" if d["default"] else ""
        print(f"{d['index']:>3}  {d['name']}  [{d['channels']} ch, {d['rate']} Hz]{mark}", file=out)
    return 0


def cmd_embed(args: argparse.Namespace, out: TextIO) -> int:
    from device.audio import read_wav
    from device.encoder import Encoder
    from device.enroll import enrollment_embedding

    encoder = Encoder(args.model_path)
    rate = encoder.manifest.frontend.sample_rate
    for path in args.wavs:
        embedding = enrollment_embedding(encoder, read_wav(path, rate))
        values = [round(float(x), 6) for x in embedding]
        if args.json:
            print(json.dumps({"file": str(path), "embedding": values}), file=out)
        else:
            print(f"{path}\t" + " ".join(f"{x:.6f}" for x in values), file=out)
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from device.wyoming_server import serve

    limits = {"idle_timeout": args.idle_timeout, "max_connections": args.max_connections}
    return int(serve(args.uri, args.store_dir, args.model_path, args.settings.detector, args.zeroconf, **limits) or 0)


COMMANDS = {
    "enroll": cmd_enroll,
    "detect": cmd_detect,
    "listen": cmd_listen,
    "list": cmd_list,
    "remove": cmd_remove,
    "set": cmd_set,
    "reembed": cmd_reembed,
    "devices": cmd_devices,
    "embed": cmd_embed,
    "serve": cmd_serve,
}
DAEMONS = {"listen", "serve"}
STORE_COMMANDS = {"enroll", "detect", "listen", "list", "remove", "set", "reembed", "serve"}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so ``main`` can run inside a test harness)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _setup_logging(verbosity: int, daemon: bool) -> None:
    # One-shot commands keep stderr for warnings and errors; daemons say what they are doing.
    levels = [logging.INFO, logging.DEBUG] if daemon else [logging.WARNING, logging.INFO, logging.DEBUG]
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if daemon else "kws: %(levelname)s: %(message)s"
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(levels[min(verbosity, len(levels) - 1)])


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``kws`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(getattr(args, "verbose", 0), args.command in DAEMONS)

    from device.audio import AudioError
    from device.enroll import EnrollmentError
    from device.interpreter import NoInterpreterError
    from device.manifest import ModelError
    from device.microphone import MicrophoneError
    from device.settings import load_settings
    from device.store import StoreError

    try:
        settings = load_settings(getattr(args, "config", None))
    except SystemExit as error:  # load_settings explains a bad config file in its exit message
        _error(str(error.code))
        return EXIT_USAGE
    args.settings = settings
    args.store_dir = Path(getattr(args, "store", None) or settings.store).expanduser()
    args.model_path = Path(getattr(args, "model", None) or settings.model).expanduser()
    args.settings = replace(settings, store=args.store_dir, model=args.model_path)
    if getattr(args, "sensitivity", None) is not None:  # --sensitivity on detect/listen/serve: every keyword, this run
        args.settings = replace(
            args.settings, detector=replace(settings.detector, sensitivity_override=args.sensitivity)
        )
    if args.command in STORE_COMMANDS and args.store_dir.exists() and not args.store_dir.is_dir():
        # Without this a file reads as an empty store: `kws listen` would run, hearing nothing.
        _error(f"the keyword store {args.store_dir} is a file, not a folder: pass a folder to --store (or set store)")
        return EXIT_USAGE

    usage_errors = (UsageError, EnrollmentError, AudioError)
    failures = (ModelError, StoreError, MicrophoneError, NoInterpreterError, OSError)
    try:
        return COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kws detect x.wav | head -1`: stop quietly, also at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as error:  # an optional part (the Wyoming server, PortAudio bindings) is missing
        _error(f"`kws {args.command}` needs the Python module {error.name!r}, which is not installed ({error})")
        return EXIT_FAILURE
    except usage_errors as error:
        _error(str(error))
        return EXIT_USAGE
    except failures as error:
        _error(str(error))
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
