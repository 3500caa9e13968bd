"""Faces and mouths in decoded frames: an MTCNN detector and a mouth track over a clip.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016) is three small CNNs: P-Net proposes 12x12 windows over an
image pyramid, R-Net (24x24) and O-Net (48x48) refine them; O-Net also gives five
landmarks (eyes, nose tip, mouth corners), which is all a mouth crop needs. The
architecture is written here; the weights are the published ones as state dicts
``pnet.pt``, ``rnet.pt``, ``onet.pt``, which the facenet-pytorch wheel ships under
``facenet_pytorch/data/`` (``scripts/install_faces.sh`` installs it without its stale
torch pins; tandem never imports it). ``FaceConfig.weights_dir`` points elsewhere.

``track_mouth`` detects every ``detect_every_s``, keeps the largest face, and
interpolates eye and mouth positions in between; ``mouth_crops`` cuts a
rotation-normalised grey patch around the mouth from every frame.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


@dataclass
class FaceConfig:
    weights_dir: str | None = None  # folder with pnet.pt, rnet.pt, onet.pt; None: facenet-pytorch's
    min_face_px: int = 40  # smaller faces carry too few mouth pixels to read lips from
    thresholds: tuple = (0.7, 0.7, 0.8)  # P-, R-, O-Net face probabilities
    pyramid_factor: float = 0.709
    detect_every_s: float = 0.25  # landmarks are interpolated between detections
    min_face_ratio: float = 0.6  # share of detections that must find the face to call it present
    device: str = "cpu"


def default_weights_dir() -> Path | None:
    from curation.sample_media import packaged_file

    return packaged_file("facenet_pytorch", "data")


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)[:, 1]


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        # The published weights were trained on transposed (W, H) feature maps.
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)[:, 1]


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_1(x).softmax(1)[:, 1], self.dense6_3(x)


@dataclass
class Face:
    box: np.ndarray  # x1, y1, x2, y2 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye, right eye, nose tip, mouth left, mouth right

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap by IoU, or by the smaller area)."""
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order, keep = np.argsort(-scores), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=int)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + reg * np.stack([w, h, w, h], 1)


def _square(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], 1)


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Each box cut from the image (zero outside it) and resized to size x size, normalised."""
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    h, w = image.shape[:2]
    for n, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw < 2 or bh < 2:
            continue
        canvas = np.zeros((bh, bw, 3), np.float32)
        sx, sy, ex, ey = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if ex > sx and ey > sy:
            canvas[sy - y1:ey - y1, sx - x1:ex - x1] = image[sy:ey, sx:ex]
        out[n] = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy((out - 127.5) / 128.0).permute(0, 3, 1, 2)


class FaceDetector:
    """MTCNN on RGB uint8 images; ``detect(image) -> list[Face]``, largest first."""

    def __init__(self, config: FaceConfig | None = None, nets: tuple[nn.Module, nn.Module, nn.Module] | None = None):
        self.config = config or FaceConfig()
        if nets is None:
            nets = load_mtcnn(self.config.weights_dir)
        self.pnet, self.rnet, self.onet = (net.to(self.config.device).eval() for net in nets)

    @torch.inference_mode()
    def _detect(self, image: np.ndarray, min_face_px: int) -> list[Face]:
        if self.config.device == "cpu":
            with single_threaded():
                return self._cascade(image, min_face_px)
        return self._cascade(image, min_face_px)

    def _cascade(self, image: np.ndarray, min_face_px: int) -> list[Face]:
        cfg, device = self.config, self.config.device
        image = np.ascontiguousarray(image).astype(np.float32)
        h, w = image.shape[:2]
        scale = 12.0 / min_face_px
        candidates = []
        while min(h, w) * scale >= 12:
            size = (int(w * scale + 1), int(h * scale + 1))
            scaled = torch.from_numpy((cv2.resize(image, size, interpolation=cv2.INTER_AREA) - 127.5) / 128.0)
            reg, prob = self.pnet(scaled.permute(2, 0, 1)[None].to(device))
            reg, prob = reg[0].cpu().numpy(), prob[0].cpu().numpy()
            ys, xs = np.nonzero(prob >= cfg.thresholds[0])
            if len(ys):
                # Each P-Net output cell is a 12x12 window at stride 2 of the scaled image.
                boxes = np.stack([np.floor((2 * xs + 1) / scale), np.floor((2 * ys + 1) / scale),
                                  np.floor((2 * xs + 12) / scale), np.floor((2 * ys + 12) / scale)], 1)
                boxes = np.concatenate([boxes, prob[ys, xs, None], reg[:, ys, xs].T], 1)
                candidates.append(boxes[_nms(boxes[:, :4], boxes[:, 4], 0.5)])
            scale *= cfg.pyramid_factor
        if not candidates:
            return []
        boxes = np.concatenate(candidates)
        boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = _square(_regress(boxes[:, :4], boxes[:, 5:9]))

        reg, prob = (t.cpu().numpy() for t in self.rnet(_patches(image, boxes, 24).to(device)))
        keep = prob > cfg.thresholds[1]
        boxes, reg, prob = boxes[keep], reg[keep], prob[keep]
        if not len(boxes):
            return []
        kept = _nms(boxes, prob, 0.7)
        boxes = _square(_regress(boxes[kept], reg[kept]))

        reg, prob, points = (t.cpu().numpy() for t in self.onet(_patches(image, boxes, 48).to(device)))
        keep = prob > cfg.thresholds[2]
        boxes, reg, prob, points = boxes[keep], reg[keep], prob[keep], points[keep]
        if not len(boxes):
            return []
        bw, bh = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
        landmarks = np.stack([bw * points[:, :5] + boxes[:, 0:1] - 1, bh * points[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = _regress(boxes, reg)
        kept = _nms(boxes, prob, 0.7, by_min=True)
        faces = [Face(boxes[i], float(prob[i]), landmarks[i]) for i in kept]
        return sorted((f for f in faces if f.size >= min_face_px * 0.8), key=lambda f: -f.size)


    def detect_near(self, image: np.ndarray, face: Face, zoom_to_px: int = 64) -> list[Face]:
        """Faces in the neighbourhood of ``face`` (twice its size around it), searched at a
        scale where it is ``zoom_to_px`` wide: a fraction of a whole-frame search's cost."""
        h, w = image.shape[:2]
        cx, cy = (face.box[:2] + face.box[2:]) / 2
        half = face.size
        x1, y1 = int(max(0, cx - half)), int(max(0, cy - half))
        x2, y2 = int(min(w, cx + half)), int(min(h, cy + half))
        scale = min(1.0, zoom_to_px / max(face.size, 1.0))
        if x2 - x1 < 12 or y2 - y1 < 12:
            return []
        region = image[y1:y2, x1:x2]
        if scale < 1.0:
            region = cv2.resize(region, (max(12, round((x2 - x1) * scale)), max(12, round((y2 - y1) * scale))),
                                interpolation=cv2.INTER_AREA)
        else:
            scale = 1.0
        min_px = self.config.min_face_px
        faces = self._detect(region, max(12, int(min_px * scale)))
        offset = np.array([x1, y1], np.float64)
        return [Face(np.concatenate([f.box[:2] / scale + offset, f.box[2:] / scale + offset]), f.score,
                     f.landmarks / scale + offset) for f in faces if f.size / scale >= min_px * 0.8]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of at least ``min_face_px`` anywhere in an RGB uint8 image, largest first."""
        return self._detect(image, self.config.min_face_px)


@contextmanager
def single_threaded():
    """Torch on one thread: these networks are too small to gain from more, and on a busy
    machine torch's thread pool made each detection ~15x slower (measured on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mtcnn_weights(weights_dir: str | Path | None = None) -> Path:
    """The folder holding the three weight files, or ValueError saying how to get them."""
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    missing = [name for name in WEIGHT_FILES if folder is None or not (folder / name).is_file()]
    if missing:
        where = folder or "facenet-pytorch's data folder (not installed: run scripts/install_faces.sh)"
        raise ValueError(f"MTCNN weights {missing} not found in {where}: set sync.faces.weights_dir "
                         f"to a folder with {', '.join(WEIGHT_FILES)}, or sync.scorer=events")
    return folder


def load_mtcnn(weights_dir: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """The three networks with the published weights from ``weights_dir``."""
    folder = mtcnn_weights(weights_dir)
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, WEIGHT_FILES, strict=True):
        net.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
    return nets


@dataclass
class MouthTrack:
    """Per frame of a clip: where the mouth is and how large the face is."""

    center: np.ndarray  # (T, 2) mouth centre (between the corners), pixels
    eye_distance: np.ndarray  # (T,) inter-ocular distance, pixels: the face's scale
    angle: np.ndarray  # (T,) roll of the eye line, radians
    found_ratio: float  # share of detection frames where the face was found
    eye_center: np.ndarray | None = None  # (T, 2) midpoint of the eyes, pixels (where a dense landmark model starts)


def track_mouth(frames: np.ndarray, fps: float, detector: FaceDetector) -> MouthTrack | None:
    """The mouth of the clip's main (largest, then nearest) face over ``frames`` (T, H, W, 3)
    RGB, or None when no face is present often enough to read lips."""
    cfg = detector.config
    step = max(1, round(cfg.detect_every_s * fps))
    probes = sorted({*range(0, len(frames), step), len(frames) - 1})
    found, previous, misses = {}, None, 0
    for index in probes:
        faces = detector.detect_near(frames[index], previous) if previous is not None else []
        faces = faces or detector.detect(frames[index])
        if not faces:
            misses += 1
            if len(probes) - misses < cfg.min_face_ratio * len(probes):
                return None  # too rare to read lips from whatever the remaining frames hold
            continue
        if previous is not None:  # stay on the same person while they are visible
            near = [f for f in faces if np.linalg.norm(f.landmarks[2] - previous.landmarks[2]) < previous.size / 2]
            faces = near or faces
        previous = found[index] = faces[0]
    at = np.array(sorted(found))
    marks = np.stack([found[i].landmarks for i in at])  # (n, 5, 2)
    eyes = marks[:, 1] - marks[:, 0]
    params = np.column_stack([marks[:, 3:5].mean(1), np.hypot(eyes[:, 0], eyes[:, 1]),
                              np.arctan2(eyes[:, 1], eyes[:, 0]), marks[:, 0:2].mean(1)])
    if len(params) >= 3:  # one bad detection must not jerk the crop: median of three
        padded = np.concatenate([params[:1], params, params[-1:]])
        params = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), 0)
    frame_index = np.arange(len(frames))
    track = np.column_stack([np.interp(frame_index, at, params[:, j]) for j in range(params.shape[1])])
    return MouthTrack(track[:, :2], track[:, 2], track[:, 3], len(found) / len(probes), track[:, 4:6])


def mouth_crops(frames: np.ndarray, track: MouthTrack, size: tuple[int, int] = (48, 32)) -> np.ndarray:
    """(T, h, w) float32 grey patches of the mouth, upright and at a fixed scale: the
    region 1.5 eye distances wide and 1 high, centred a little below the mouth corners."""
    w, h = size
    out = np.empty((len(frames), h, w), np.float32)
    for t, frame in enumerate(frames):
        scale = w / (1.5 * track.eye_distance[t])
        cos, sin = np.cos(track.angle[t]) * scale, np.sin(track.angle[t]) * scale
        cx, cy = track.center[t] + 0.1 * track.eye_distance[t] * np.array([-np.sin(track.angle[t]),
                                                                            np.cos(track.angle[t])])
        # Rotate by -angle and scale about the mouth centre, which lands in the patch's middle.
        matrix = np.array([[cos, sin, w / 2 - cos * cx - sin * cy], [-sin, cos, h / 2 + sin * cx - cos * cy]])
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        out[t] = cv2.warpAffine(grey, matrix, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return out
