"""A learned A/V sync scorer: SyncNet as Wav2Lip trains it (its "lip-sync expert").

Architecture (Prajwal et al., "A Lip Sync Expert Is All You Need for Speech to Lip
Generation In the Wild", ACM MM 2020, after Chung & Zisserman's SyncNet, 2016): a face
encoder over 5 consecutive frames of the lower half of a 96x96 face crop (15 channels,
48x96) and an audio encoder over the 0.2 s of 80-band log-mel spectrogram that goes
with them (80x16), both stacks of conv + batch-norm + ReLU blocks (some residual),
each ending in a 512-d embedding, L2-normalised. In sync, the two embeddings point the
same way (cosine similarity); training pushed off-sync pairs apart.

Offset: the clip's windows are embedded once; for every shift of the audio by whole
frames within +-max_lag, the mean cosine distance between each picture window and the
shifted audio window; the shift with the smallest distance (refined between frames by a
parabola) is the offset. Confidence, as SyncNet's own tools report it, is how far the
median distance lies above that minimum, mapped to 0..1 by ``confidence_scale``.

Weights (local files only): Wav2Lip's published ``lipsync_expert.pth`` (a torch
checkpoint whose ``state_dict`` has keys ``face_encoder.N.conv_block.{0,1}.*`` and
``audio_encoder.N.conv_block.{0,1}.*``, exactly this module's names; a ``module.``
prefix from DataParallel is stripped). Point the stage at it with
``sync.scorer=syncnet sync.model_path=/models/wav2lip/lipsync_expert.pth``.
LatentSync's ``stable_syncnet.pt`` is a different, larger network (256x256 faces, its
own encoders) and does not load here. ``confidence_scale`` must be calibrated with
benchmarks/sync_accuracy.py once real weights are at hand: the default is a guess.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from curation.faces import FaceConfig, FaceDetector

FACE_SIZE = 96
WINDOW_FRAMES = 5  # picture frames per embedding (0.2 s at 25 fps)
MEL_STEPS = 16  # mel frames per embedding (0.2 s at 80 mel frames/s)
MEL_RATE = 16000
MEL_HOP = 200  # 12.5 ms
FPS = 25.0  # what the published weights were trained on


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return torch.relu(out + x if self.residual else out)


def _stack(spec: list[tuple]) -> nn.Sequential:
    """Blocks from (cin, cout, kernel, stride, padding, residual) rows."""
    return nn.Sequential(*(ConvBlock(*row) for row in spec))


class SyncNet(nn.Module):
    """(mel (B, 1, 80, 16), faces (B, 15, 48, 96)) -> (audio, face) embeddings (B, 512), unit length."""

    def __init__(self):
        super().__init__()
        r = True
        self.face_encoder = _stack([
            (15, 32, 7, 1, 3, False), (32, 64, 5, (1, 2), 1, False), (64, 64, 3, 1, 1, r), (64, 64, 3, 1, 1, r),
            (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, r), (128, 128, 3, 1, 1, r), (128, 128, 3, 1, 1, r),
            (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, r), (256, 256, 3, 1, 1, r),
            (256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, r), (512, 512, 3, 1, 1, r),
            (512, 512, 3, 2, 1, False), (512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)])
        self.audio_encoder = _stack([
            (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, r), (32, 32, 3, 1, 1, r),
            (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, r), (64, 64, 3, 1, 1, r),
            (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, r), (128, 128, 3, 1, 1, r),
            (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, r), (256, 256, 3, 1, 1, r),
            (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)])

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        audio = nn.functional.normalize(self.audio_encoder(mel).flatten(1), dim=1)
        face = nn.functional.normalize(self.face_encoder(faces).flatten(1), dim=1)
        return audio, face


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNet:
    """A SyncNet with the weights of a Wav2Lip-style checkpoint (see the module docstring)."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = SyncNet()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a Wav2Lip SyncNet checkpoint: missing {missing[:3]}..., "
                         f"unexpected {unexpected[:3]}...")
    return net.to(device).eval()


def log_mel(mono: np.ndarray, rate: int) -> np.ndarray:
    """(T_mel, 80) log-mel frames at 80 per second, normalised to [-4, 4] as Wav2Lip's
    front end does (pre-emphasis 0.97, 50 ms windows, 55-7600 Hz, -100 dB floor, +20 dB ref)."""
    from curation.jit_cache import ensure_warm

    ensure_warm()  # before librosa's import: its kernels load from the project's checked cache
    import librosa
    from scipy.signal import lfilter, resample_poly

    if rate != MEL_RATE:
        mono = resample_poly(mono, MEL_RATE, rate)
    spectrum = np.abs(librosa.stft(lfilter([1, -0.97], [1], mono), n_fft=800, hop_length=MEL_HOP, win_length=800))
    mel = librosa.filters.mel(sr=MEL_RATE, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spectrum
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T.astype(np.float32)


def face_crops(frames: np.ndarray, fps: float, detector: FaceDetector) -> np.ndarray | None:
    """(T, 3, 48, 96) lower halves of 96x96 face crops in [0, 1], BGR as Wav2Lip trains on
    them, or None without a face. Boxes are detected every few frames and interpolated."""
    step = max(1, round(detector.config.detect_every_s * fps))
    probes = sorted({*range(0, len(frames), step), len(frames) - 1})
    found = {}
    for i in probes:
        faces = detector.detect(frames[i])
        if faces:
            found[i] = faces[0].box
    if len(found) < detector.config.min_face_ratio * len(probes):
        return None
    at = np.array(sorted(found))
    boxes = np.stack([found[i] for i in at])
    boxes = np.column_stack([np.interp(np.arange(len(frames)), at, boxes[:, j]) for j in range(4)])
    out = np.empty((len(frames), 3, FACE_SIZE // 2, FACE_SIZE), np.float32)
    h, w = frames.shape[1:3]
    for t, (x1, y1, x2, y2) in enumerate(boxes):
        y2 += 0.1 * (y2 - y1)  # Wav2Lip pads the box downwards to keep the chin
        x1, y1, x2, y2 = (int(round(v)) for v in (max(0, x1), max(0, y1), min(w, x2), min(h, y2)))
        crop = cv2.resize(frames[t, y1:max(y2, y1 + 2), x1:max(x2, x1 + 2), ::-1], (FACE_SIZE, FACE_SIZE))
        out[t] = crop[FACE_SIZE // 2:].transpose(2, 0, 1) / 255.0
    return out


class SyncNetScorer:
    """The ``sync.scorer=syncnet`` plug-in: ``estimate`` for one clip, ``score_batch`` for many."""

    method = "syncnet"

    def __init__(self, model_path: str | Path | None = None, *, net: SyncNet | None = None,
                 faces: FaceConfig | None = None, device: str | None = None, max_lag_s: float = 1.0,
                 confidence_scale: float = 0.05, min_confidence: float = 0.5, batch: int = 64):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if net is None and model_path is None:
            raise ValueError("SyncNetScorer needs model_path (Wav2Lip's lipsync_expert.pth) or a net")
        self.net = (net or load_syncnet(model_path, self.device)).to(self.device).eval()
        self.detector = FaceDetector(faces or FaceConfig(device=self.device))
        self.max_lag_s, self.confidence_scale = max_lag_s, confidence_scale
        self.min_confidence, self.batch = min_confidence, batch

    @torch.inference_mode()
    def _embed(self, crops: np.ndarray, mel: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """Picture and audio embeddings for every window start frame with both available."""
        starts = [t for t in range(len(crops) - WINDOW_FRAMES + 1)
                  if round(t / fps * 80) + MEL_STEPS <= len(mel)]
        faces = np.stack([crops[t:t + WINDOW_FRAMES].reshape(-1, *crops.shape[2:]) for t in starts])
        mels = np.stack([mel[round(t / fps * 80):round(t / fps * 80) + MEL_STEPS].T[None] for t in starts])
        audio_out, face_out = [], []
        for i in range(0, len(starts), self.batch):
            a, f = self.net(torch.from_numpy(mels[i:i + self.batch]).to(self.device),
                            torch.from_numpy(faces[i:i + self.batch]).to(self.device))
            audio_out.append(a.float().cpu().numpy())
            face_out.append(f.float().cpu().numpy())
        return np.concatenate(face_out), np.concatenate(audio_out)

    def estimate(self, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int):
        return self.score_batch([(frames, fps, audio, sample_rate)])[0]

    def score_batch(self, clips: list[tuple[np.ndarray, float, np.ndarray, int]]) -> list:
        """One SyncEstimate per (frames, fps, audio (channels, N), sample_rate)."""
        from curation.sync import SyncEstimate

        out = []
        for frames, fps, audio, rate in clips:
            mono = np.asarray(audio, np.float32)
            mono = mono.mean(0) if mono.ndim == 2 else mono
            crops = face_crops(frames, fps, self.detector)
            if crops is None:
                out.append(SyncEstimate(None, 0.0, self.method, "no_face"))
                continue
            if len(crops) < WINDOW_FRAMES + 2 or len(mono) < rate * 0.3:
                out.append(SyncEstimate(None, 0.0, self.method, "no_speech"))
                continue
            face, sound = self._embed(crops, log_mel(mono, rate), fps)
            out.append(self._offset(face, sound, fps))
        return out

    def _offset(self, face: np.ndarray, sound: np.ndarray, fps: float):
        from curation.sync import SyncEstimate

        n, max_shift = len(face), max(1, round(self.max_lag_s * fps))
        shifts = np.arange(-max_shift, max_shift + 1)
        # Audio window i + s matching picture window i: the sound comes s frames late.
        curve = np.array([np.mean(1 - np.sum(face[max(0, -s):n - max(0, s)] * sound[max(0, s):n + min(0, s)], 1))
                          if n - abs(s) > 0 else np.inf for s in shifts])
        finite = np.isfinite(curve)
        best = int(np.argmin(np.where(finite, curve, np.inf)))
        lag = float(shifts[best])
        if 0 < best < len(curve) - 1 and finite[best - 1] and finite[best + 1]:
            left, mid, right = curve[best - 1:best + 2]
            denominator = left - 2 * mid + right
            lag += 0.5 * (left - right) / denominator if denominator > 0 else 0.0
        spread = float(np.median(curve[finite]) - curve[best])
        confidence = round(float(1 - np.exp(-max(spread, 0.0) / self.confidence_scale)), 3)
        offset = round(lag * 1000 / fps, 1)
        if confidence < self.min_confidence:
            return SyncEstimate(None, confidence, self.method, "ambiguous", offset)
        return SyncEstimate(offset, confidence, self.method, None, offset)
