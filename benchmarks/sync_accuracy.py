"""A/V sync accuracy on real footage only: real talking heads and real sound events, with
their own audio shifted by known amounts, calibrated on some speakers, reported on others.

    TANDEM_REAL_AV=/work/shared/data/real-av PYTHONPATH=. .venv/bin/python benchmarks/sync_accuracy.py \\
        [--cache .work/sync_accuracy] [--folds 4] [--seed 0] [--fit] [--compare]

Data: the real development set (benchmarks/real_av.py; manifest.csv names each clip's
origin, licence and speaker); absent, the script says so and stops. Each clip is decoded
and its face tracked once (the sync stage's own functions, ``decode_width`` 320), and the
result cached in ``--cache``; then its real audio is shifted by 0, +-40, +-80, +-160,
+-300 and +-500 ms (positive: the audio lags) and the offset estimated as the stage does.

Split: speakers (events: clips) go to ``--folds`` folds at random with ``--seed``; the
calibration (P(within 40 ms) from the lag search: curation/sync_calibration.py) is fitted
on the other folds' speakers and applied to each fold's, so every figure below is on
speakers the calibration never saw. ``--fit`` prints the coefficients fitted on every
speaker (what ``curation.sync.CALIBRATION`` holds). ``--compare`` also reports the lip
signals that were considered (inner opening alone, three lip measures, mouth appearance,
the opening a speech-to-mouth model predicts, fitted per fold) and, per clip, how far each
signal's best lag sits from the truth across the shifts (a shift only translates a clip's
lag curve, so a clip's shifts are one measurement, not eleven).

Printed: per offset and per clip family, the share within +-40 ms, unmeasured, and wrong
by more than 80 ms (of reported estimates), and the share whose best lag was within 40 ms
before the confidence gate (what a perfect confidence could at most report); the reliability table (confidence against actual error); what the
default policy does to in-sync clips (the worst shift) and to shifted ones (corrected,
rejected, by how much); and the cost per clip-second. Written to
benchmarks/results/sync_accuracy.txt unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_av import SHIFTS_MS, clip_features, folds, real_av_dir, real_clips, shift_audio  # noqa: E402
from curation.sync import CALIBRATION, SyncConfig, SyncEstimate, SyncStage  # noqa: E402
from curation.sync_calibration import fit_logistic, probability, search_features  # noqa: E402
from curation.sync_events import event_lag  # noqa: E402
from curation.sync_lips import LIP_SIGNAL, signals_lag  # noqa: E402

METHOD = {"talking_head": "lip_envelope", "event": "onset_xcorr"}


@dataclass
class Trial:
    clip: str
    family: str
    source: str
    group: str
    shift_ms: float
    candidate_ms: float | None
    features: np.ndarray | None  # the calibration's inputs (None: nothing to search)
    reason: str | None
    search_s: float
    confidence: float = 0.0

    @property
    def error(self) -> float | None:
        return None if self.candidate_ms is None else abs(self.candidate_ms - self.shift_ms)


def run_trials(clips, cache: Path, config: SyncConfig, kind: str, n_folds: int, seed: int) -> list[Trial]:
    """Every clip at every shift, searched as the stage does (cached per version of the
    estimators' code and settings: refitting the calibration does not search again). The
    ``predicted`` lip signal's speech-to-mouth model is fitted per fold, on the other
    folds' speakers, so no clip is searched with a model that saw its speaker."""
    import hashlib
    import pickle

    from curation import sync_events, sync_lag, sync_lips, sync_speech_mouth

    code = "".join(Path(m.__file__).read_text() for m in (sync_events, sync_lag, sync_lips, sync_speech_mouth))
    key = hashlib.sha256(f"{code}{config.max_lag_s}{config.distinct_s}{kind}{n_folds}{seed}"
                         f"{[c.file for c in clips]}".encode())
    stored = cache / f"trials_{kind}_w{config.decode_width}_{key.hexdigest()[:12]}.pkl"
    if stored.is_file():
        return pickle.loads(stored.read_bytes())
    trials = _search_all(clips, cache, config, kind, n_folds, seed)
    stored.write_bytes(pickle.dumps(trials))
    return trials


def speech_mouth_models(clips, features: dict, n_folds: int, seed: int) -> dict:
    """{speaker: the speech-to-mouth model fitted on the talking heads of the other folds}."""
    from curation.sync_speech_mouth import fit_model

    talking = [c for c in clips if c.family == "talking_head" and "landmarks" in features[c.file]]
    fold_of = folds([c.group for c in talking], n_folds, seed)
    models = {}
    for k in range(n_folds):
        model = fit_model([training_clip(features[c.file]) for c in talking if fold_of[c.group] != k])
        models.update({group: model for group, fold in fold_of.items() if fold == k})
    return models


def training_clip(f: dict) -> tuple:
    return f["mono"], int(f["rate"]), f["landmarks"], float(f["fps"])


def _search_all(clips, cache: Path, config: SyncConfig, kind: str, n_folds: int, seed: int) -> list[Trial]:
    from curation.faces import FaceDetector
    from curation.lip_landmarks import LipReader

    detector, reader = FaceDetector(config.faces), LipReader(config.landmarks_path)
    features = {c.file: clip_features(c, cache, config.decode_width, detector, reader) for c in clips}
    models = speech_mouth_models(clips, features, n_folds, seed) if kind == "predicted" else {}
    trials = []
    for clip in clips:
        f = features[clip.file]
        fps, rate = float(f["fps"]), int(f["rate"])
        for shift in SHIFTS_MS:
            mono = shift_audio(f["mono"], rate, shift)
            started = time.perf_counter()
            if clip.family == "talking_head":
                search, reason = ((None, "no_face") if "lips" not in f else
                                  signals_lag(f, fps, mono, rate, max_lag_s=config.max_lag_s,
                                              distinct_s=config.distinct_s, kind=kind, model=models.get(clip.group)))
            else:
                search, reason = event_lag(f["motion"], fps, mono, rate, max_lag_s=config.max_lag_s,
                                           distinct_s=config.distinct_s)
            seconds = time.perf_counter() - started
            trials.append(Trial(clip.file, clip.family, clip.source, clip.group, shift,
                                None if search is None else round(search.offset_s * 1000, 1),
                                None if search is None else search_features(search), reason, seconds))
    return trials


def cross_validate(trials: list[Trial], n_folds: int, seed: int) -> None:
    """Each trial's confidence from a calibration fitted without its speaker's fold."""
    for family in METHOD:
        rows = [t for t in trials if t.family == family]
        fold_of = folds([t.group for t in rows], n_folds, seed)
        for k in range(n_folds):
            train = [t for t in rows if fold_of[t.group] != k and t.features is not None]
            coefficients = fit_logistic(np.stack([t.features for t in train]),
                                        np.array([t.error <= 40 for t in train]))
            for t in rows:
                if fold_of[t.group] == k and t.features is not None:
                    t.confidence = float(probability(coefficients, t.features))


def estimate(t: Trial, config: SyncConfig) -> SyncEstimate:
    method = METHOD[t.family]
    if t.features is None:
        return SyncEstimate(None, 0.0, method, t.reason)
    if t.confidence < config.min_confidence:
        return SyncEstimate(None, t.confidence, method, "ambiguous", t.candidate_ms)
    return SyncEstimate(t.candidate_ms, t.confidence, method, None, t.candidate_ms)


def shares(rows: list[tuple[Trial, SyncEstimate]]) -> str:
    n = len(rows)
    measured = [(t, e) for t, e in rows if e.offset_ms is not None]
    within = sum(abs(e.offset_ms - t.shift_ms) <= 40 for t, e in measured)
    wrong = sum(abs(e.offset_ms - t.shift_ms) > 80 for t, e in measured)
    best = sum(t.error is not None and t.error <= 40 for t, _ in rows)  # before the confidence gate
    return f"{n:5d} {within / n:9.0%} {(n - len(measured)) / n:11.0%} {wrong / n:10.0%} {best / n:13.0%}"


def report(trials: list[Trial], config: SyncConfig, cost: dict, out) -> dict[str, list[tuple]]:
    """Prints the tables; returns the reliability rows per method (curation.sync.RELIABILITY)."""
    stage, reliability = SyncStage(config), {}
    pairs = [(t, estimate(t, config)) for t in trials]
    head = f"{'':22} {'n':>5} {'within40':>9} {'unmeasured':>11} {'wrong>80':>10} {'best lag<=40':>13}"
    for family in METHOD:
        rows = [(t, e) for t, e in pairs if t.family == family]
        print(f"\n== {family} ({METHOD[family]}), held-out {'speakers' if family == 'talking_head' else 'clips'}; "
              f"min_confidence {config.min_confidence}", file=out)
        print(head, file=out)
        for shift in SHIFTS_MS:
            print(f"{'offset ' + f'{shift:+d} ms':22} " + shares([r for r in rows if r[0].shift_ms == shift]), file=out)
        for source in sorted({t.source for t, _ in rows}):
            print(f"{'family ' + source:22} " + shares([r for r in rows if r[0].source == source]), file=out)
        big = [r for r in rows if 80 <= abs(r[0].shift_ms) <= 500]
        print(f"{'|offset| 80-500 ms':22} " + shares(big), file=out)
        print(f"{'all':22} " + shares(rows), file=out)
        print("\nreliability (confidence against actual error of the best lag):", file=out)
        print(f"{'confidence':>12} {'n':>5} {'within40':>9} {'wrong>80':>9}", file=out)
        searched = [t for t, _ in rows if t.features is not None]
        reliability[METHOD[family]] = []
        for low, high in ((0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)):
            b = [t for t in searched if low <= t.confidence < high]
            if b:
                row = (f"{low:.1f}-{min(high, 1):.1f}", len(b), f"{np.mean([t.error <= 40 for t in b]):.0%}",
                       f"{np.mean([t.error > 80 for t in b]):.0%}")
                reliability[METHOD[family]].append(row)
                print(f"{row[0]:>12} {row[1]:5d} {row[2]:>9} {row[3]:>9}", file=out)
        confident_wrong = [t for t, e in rows if e.offset_ms is not None and t.error > 80]
        print(f"estimates off by > 80 ms at confidence >= {config.min_confidence}: {len(confident_wrong)}"
              + "".join(f"\n  {t.clip} {t.shift_ms:+.0f} ms: {t.candidate_ms:+.0f} ({t.confidence:.2f})"
                        for t in confident_wrong), file=out)
        in_sync = [(t, e) for t, e in rows if t.shift_ms == 0]
        moved = [abs(e.offset_ms) for t, e in in_sync if stage._decide(e) == "corrected"]
        print(f"in-sync clips under the default policy ({config.policy}, in_sync_ms {config.in_sync_ms:.0f}): "
              f"{len(in_sync)} clips, {len(moved)} shifted, worst shift {max(moved, default=0):.0f} ms, "
              f"{sum(stage._decide(e) == 'rejected' for _, e in in_sync)} rejected", file=out)
        shifted = [(t, e, stage._decide(e)) for t, e in rows if t.shift_ms != 0]
        fixed = [abs(e.offset_ms - t.shift_ms) for t, e, a in shifted if a == "corrected"]
        print(f"shifted clips: {len(shifted)}; corrected {len(fixed)} (residual error median "
              f"{np.median(fixed) if fixed else 0:.0f} ms, worst {max(fixed, default=0):.0f} ms), rejected "
              f"{sum(a == 'rejected' for *_, a in shifted)}, kept {sum(a == 'kept' for *_, a in shifted)}, "
              f"unmeasured {sum(a == 'unmeasured' for *_, a in shifted)}", file=out)
        c = cost[family]
        print(f"cost: {c['seconds'] / c['clip_s']:.2f} s per clip-second on this machine's CPU (decode "
              f"{c['decode'] / c['clip_s']:.2f}, faces and landmarks {c['faces'] / c['clip_s']:.2f}, "
              f"lag search {c['search'] / c['clip_s']:.2f}; {c['clip_s']:.0f} s of footage)", file=out)
    return reliability


def print_consistency(by_kind: dict[str, list[Trial]], out) -> None:
    """Per clip and signal: the median of (best lag - true shift) over the shifts, and at how
    many shifts the best lag lies within 40 ms of that median. A clip whose estimates follow
    every shift but sit at the same distance from it is read consistently: either the
    estimator is biased on it, or the clip is not in sync at the source (its 0 is not the truth)."""
    print("\nper clip, best lag - true shift: median over the shifts (ms) / shifts within 40 ms of it:", file=out)
    print(f"{'clip':40} " + " ".join(f"{kind:>12}" for kind in by_kind), file=out)
    clips, right = sorted({t.clip for t in next(iter(by_kind.values()))}), dict.fromkeys(by_kind, 0)
    for clip in clips:
        cells = []
        for kind, rows in by_kind.items():
            bias = [t.candidate_ms - t.shift_ms for t in rows if t.clip == clip and t.candidate_ms is not None]
            median = float(np.median(bias)) if bias else float("nan")
            right[kind] += abs(median) <= 40
            cells.append(f"{median:+5.0f} {sum(abs(b - median) <= 40 for b in bias):2d}/{len(SHIFTS_MS)}")
        print(f"{Path(clip).stem:40} " + " ".join(f"{c:>12}" for c in cells), file=out)
    print(f"{'clips with |median| <= 40 ms':40} " + " ".join(f"{f'{n}/{len(clips)}':>12}" for n in right.values()),
          file=out)


def costs(trials: list[Trial], clips, cache: Path, width: int) -> dict:
    out = {}
    for family in METHOD:
        files = [c for c in clips if c.family == family]
        seconds = np.sum([np.load(cache / f"{Path(c.file).stem}_w{width}.npz")["seconds"] for c in files], 0)
        clip_s = sum(float(np.load(cache / f"{Path(c.file).stem}_w{width}.npz")["n_frames"])
                     / float(np.load(cache / f"{Path(c.file).stem}_w{width}.npz")["fps"]) for c in files)
        search = np.mean([t.search_s for t in trials if t.family == family]) * len(files)  # one search a clip
        out[family] = {"decode": seconds[0], "faces": seconds[1] + seconds[2], "search": search,
                       "seconds": seconds.sum() + search, "clip_s": clip_s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=".work/sync_accuracy")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", action="store_true", help="print the calibration fitted on every speaker")
    parser.add_argument("--compare", action="store_true", help="also report the other lip signals considered")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    folder = real_av_dir()
    if folder is None:
        raise SystemExit("the real A/V development set is absent: set TANDEM_REAL_AV to its folder "
                         "(manifest.csv, talking/, events/); nothing synthetic is reported instead")
    clips, config, cache = real_clips(folder), SyncConfig(), Path(args.cache)
    lines = []

    class Tee:
        def write(self, text):
            sys.stdout.write(text)
            lines.append(text)

    out = Tee()
    print(f"real footage: {folder} ({sum(c.family == 'talking_head' for c in clips)} talking heads, "
          f"{len({c.group for c in clips if c.family == 'talking_head'})} speakers; "
          f"{sum(c.family == 'event' for c in clips)} sound events); shifts {SHIFTS_MS} ms; "
          f"{args.folds} folds by speaker (events: by clip), seed {args.seed}; lip signal {LIP_SIGNAL!r}", file=out)
    trials = run_trials(clips, cache, config, LIP_SIGNAL, args.folds, args.seed)
    cross_validate(trials, args.folds, args.seed)
    reliability = report(trials, config, costs(trials, clips, cache, config.decode_width), out)
    if args.compare:
        print("\n== lip signals considered (talking heads, best lag only, before calibration):", file=out)
        print(f"{'signal':10} {'within40':>9} {'within80':>9}", file=out)
        talking = [c for c in clips if c.family == "talking_head"]
        by_kind = {kind: run_trials(talking, cache, config, kind, args.folds, args.seed)
                   for kind in ("opening", "lips", "patch", "predicted")}
        for kind, rows in by_kind.items():
            errors = [t.error for t in rows if t.error is not None]
            n = len(talking) * len(SHIFTS_MS)
            print(f"{kind:10} {sum(e <= 40 for e in errors) / n:9.0%} {sum(e <= 80 for e in errors) / n:9.0%}", file=out)
        print_consistency(by_kind, out)
        print("(opening: inner lips alone, signed; lips: inner/outer opening and width, dlib's 68 points; patch: "
              "MTCNN-placed mouth appearance; predicted: the lips' opening against the opening a speech-to-mouth "
              "model fitted on the other folds' speakers predicts from the log-mel spectrum. Landmark models: mediapipe's face mesh could not be compared, as its "
              "releases that ship weights need numpy < 2 and protobuf < 5 and later ones ship none.)", file=out)
    if args.fit:
        print("\ncalibration fitted on every speaker (curation.sync.CALIBRATION):", file=out)
        for family, method in METHOD.items():
            rows = [t for t in trials if t.family == family and t.features is not None]
            fitted = fit_logistic(np.stack([t.features for t in rows]), np.array([t.error <= 40 for t in rows]))
            print(f"    {method!r}: {fitted},  # now {CALIBRATION[method]}", file=out)
        print("held-out reliability (curation.sync.RELIABILITY):", file=out)
        for method, rows in reliability.items():
            print(f"    {method!r}: {rows},", file=out)
    if not args.no_write:
        path = Path(__file__).parent / "results" / "sync_accuracy.txt"
        path.write_text("".join(lines))
        print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
