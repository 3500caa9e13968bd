#!/usr/bin/env bash
# Install the WhisperX stack into a virtual environment without touching its torch.
#
#   bash scripts/install_asr.sh VENV CONSTRAINTS     (scripts/run.sh calls it after the main install)
#
# whisperx 3.8.6 pins torch~=2.8, torchaudio~=2.8 and torchcodec<0.8: a plain
# `pip install whisperx` replaces the CPU torch with a multi-GB CUDA build, and with a
# torch constraint pip silently falls back to whisperx 3.7.2 and downgrades numpy/pandas.
# So: whisperx, pyannote.audio and the few packages whose metadata pins torchaudio go in
# without the resolver; everything else they import goes in normally, under CONSTRAINTS
# (which pins torch). torchaudio is installed for its pure-Python parts (pyannote imports
# it at module level); its native libraries do not load on a CPU torch, and nothing on
# tandem's code paths needs them. torchcodec is left out (it does not load either;
# pyannote guards that import, and tandem hands audio over as waveforms).
# `pip check` complains about these pins afterwards: that is by design.
#
# Idempotent: already-installed pins are skipped. Fails if torch changed.
set -euo pipefail
VENV=${1:?usage: install_asr.sh VENV CONSTRAINTS}
CONSTRAINTS=${2:?usage: install_asr.sh VENV CONSTRAINTS}
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

torch_before=$("$PY" -c "import torch; print(torch.__version__)")

# Their ordinary dependencies (all resolve beside torch 2.13 as new installs, no upgrades).
"${PIP[@]}" -c "$CONSTRAINTS" \
  "pyannote.core>=6.0.1" "pyannote.database>=6.1.1" "pyannote.metrics>=4.0.0" \
  "pyannote.pipeline>=4.0.0" "pyannoteai-sdk>=0.3.0" "asteroid-filterbanks>=0.4.0" \
  "lightning>=2.4" "torchmetrics>=1.6.1" "pytorch-metric-learning>=2.8.1" julius primePy \
  "opentelemetry-api>=1.34" "opentelemetry-sdk>=1.34" "opentelemetry-exporter-otlp>=1.34" \
  "rich>=13.9.4" "einops>=0.8.1" "nltk>=3.9.1" "omegaconf>=2.3.0" \
  "faster-whisper>=1.2.0" "ctranslate2>=4.5.0" 2>&1 | grep -v "is ignored: it is neither" || true

# The packages whose metadata pins another torch: no resolver.
"${PIP[@]}" --no-deps whisperx==3.8.6 pyannote.audio==4.0.7 torchaudio==2.11.0 \
  torch-audiomentations==0.12.0 torch-pitch-shift==1.2.5 2>&1 | grep -v "is ignored: it is neither" || true

# torchaudio's native libraries are built against one torch release (a CUDA one on
# Linux): when they do not load, `import torchaudio` raises, and transformers imports
# torchaudio whenever it is installed, so every transformers processor would break.
# Without them torchaudio is pure Python (what pyannote and whisperx use here).
if ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
  lib=$("$PY" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('torchaudio').origin).parent / 'lib')")
  for so in "$lib"/*.so; do [ -e "$so" ] && mv "$so" "$so.disabled"; done
  "$PY" -c "import torchaudio" || { echo "[install_asr] torchaudio still does not import" >&2; exit 1; }
fi

torch_after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
  echo "[install_asr] torch changed from $torch_before to $torch_after: reinstall it with -c $CONSTRAINTS" >&2
  exit 1
fi
"$PY" -c "import whisperx.asr, pyannote.audio" 2>/dev/null \
  && echo "[install_asr] whisperx ready (torch $torch_after)" \
  || echo "[install_asr] whisperx does not import here; the faster-whisper backend still works" >&2
