"""The lips of a tracked face: 68 dense landmarks per frame, and how open the mouth is.

MTCNN's five points (curation/faces.py) place the mouth but cannot say whether it is
open. dlib's 68-point shape predictor (Kazemi & Sullivan, "One Millisecond Face
Alignment with an Ensemble of Regression Trees", CVPR 2014; trained on iBUG 300-W)
outlines the outer and the inner lip; the inner lip's vertical opening is what speech
moves. Its published weights (``shape_predictor_68_face_landmarks.dat``, 100 MB) ship
inside the ``face-recognition-models`` package and dlib itself as the ``dlib-bin`` wheel
(``scripts/install_faces.sh`` installs both; no download at run time).

The predictor starts from a face box. dlib's own detector only finds frontal faces, so
the box comes from the MTCNN track instead: centred below the eyes, sized from the eye
distance and the eye-to-mouth distance (which stay comparable on three-quarter faces),
then refitted once from the first pass's landmarks so that it matches the boxes the
predictor was trained on.

``mediapipe`` was the other candidate: its releases that still ship face-mesh weights
(<= 0.10.21) need numpy < 2 and protobuf < 5, which this project's pins rule out; later
ones ship no weights (a model hub download), so it is not used.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from curation.faces import MouthTrack

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INNER_TOP, INNER_BOTTOM = (61, 62, 63), (67, 66, 65)  # inner-lip points facing each other
OUTER_TOP, OUTER_BOTTOM = (50, 51, 52), (58, 57, 56)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54
NOSE_TOP, NOSE_TIP = 27, 33  # the nose's length scales the face and barely changes with yaw
LIP_FEATURES = ("inner_opening", "outer_opening", "mouth_width")


def predictor_path(path: str | Path | None = None) -> Path:
    """The 68-point predictor's weights, or ValueError saying how to get them."""
    from curation.sample_media import packaged_file

    found = Path(path) if path else packaged_file("face_recognition_models", "models", PREDICTOR_FILE)
    if found is None or not found.is_file():
        raise ValueError(f"dlib's {PREDICTOR_FILE} not found ({path or 'face-recognition-models is not installed'}):"
                         f" run scripts/install_faces.sh, set sync.landmarks_path, or sync.scorer=events")
    try:
        import dlib  # noqa: F401
    except ImportError as err:
        raise ValueError("dlib is not installed (the dlib-bin wheel): run scripts/install_faces.sh, "
                         "or sync.scorer=events") from err
    return found


class LipReader:
    """68 landmarks per frame along a face track (dlib's shape predictor, loaded once, when
    the first face needs it: clips without a face never pay for its 100 MB)."""

    def __init__(self, path: str | Path | None = None):
        self.path = path
        self._predictor = None

    def _shape(self, grey: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
        if self._predictor is None:
            found = predictor_path(self.path)  # a ValueError that says how to install it
            import dlib

            self._dlib, self._predictor = dlib, dlib.shape_predictor(str(found))
        half = size / 2
        box = self._dlib.rectangle(int(center[0] - half), int(center[1] - half),
                                   int(center[0] + half), int(center[1] + half))
        shape = self._predictor(grey, box)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def landmarks(self, frames: np.ndarray, track: MouthTrack) -> np.ndarray:
        """(T, 68, 2) landmarks of the tracked face in every frame of ``frames`` (T, H, W, 3) RGB."""
        out = np.empty((len(frames), 68, 2), np.float32)
        eyes = track.eye_center if track.eye_center is not None else track.center - [0, track.eye_distance.mean()]
        for t, frame in enumerate(frames):
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            eye_to_mouth = float(np.linalg.norm(track.center[t] - eyes[t]))
            # Measured against dlib's own detector on frontal faces: its box is centred about
            # half an eye-to-mouth distance below the eyes and ~1.15 (eye + eye-to-mouth distance) wide.
            first = self._shape(grey, eyes[t] + 0.5 * (track.center[t] - eyes[t]),
                                1.15 * (track.eye_distance[t] + eye_to_mouth))
            # Refit from the first outline (jaw width, brows to chin), as the training boxes were drawn.
            low, high = first[:27].min(0), first[:27].max(0)
            out[t] = self._shape(grey, (low + high) / 2 + [0, 0.05 * (high[1] - low[1])],
                                 0.95 * max(high[0] - low[0], high[1] - low[1]))
        return out


def lip_features(landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) inner-lip opening, outer-lip opening and mouth width per frame, each over the
    nose's length in that frame (scale-free: zoom and distance do not move them)."""
    scale = np.linalg.norm(landmarks[:, NOSE_TIP] - landmarks[:, NOSE_TOP], axis=-1) + 1e-6
    inner = np.linalg.norm(landmarks[:, INNER_TOP] - landmarks[:, INNER_BOTTOM], axis=-1).mean(1)
    outer = np.linalg.norm(landmarks[:, OUTER_TOP] - landmarks[:, OUTER_BOTTOM], axis=-1).mean(1)
    width = np.linalg.norm(landmarks[:, MOUTH_RIGHT] - landmarks[:, MOUTH_LEFT], axis=-1)
    return np.stack([inner, outer, width], 1) / scale[:, None]
