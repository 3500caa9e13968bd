#!/usr/bin/env bash
# Install Label Studio into its own virtual environment (idempotent) and print its path.
#
#   bash scripts/install_labelstudio.sh [VENV]
#
# VENV defaults to $TANDEM_LABELSTUDIO_VENV, else ~/.cache/tandem/label-studio-<version>
# (one per user, shared by every checkout). Label Studio pins Django plugins, pyarrow 24.x,
# pytz<2023 and redis 5.2: in tandem's own venv those pins would tie the training stack's
# lock to the annotation tool's, so it lives apart. `tandem annotate serve` and the server
# test's fixture call this on first use (~3 min, ~1 GB); afterwards it returns at once.
set -euo pipefail
LS_VERSION=1.23.2
SDK_VERSION=2.1.2  # the one label-studio 1.23.2 requires
SELENIUM_VERSION=4.51.0  # the browser check (pipelines/labelstudio_browser.py) drives Debian's chromium
VENV=${1:-${TANDEM_LABELSTUDIO_VENV:-$HOME/.cache/tandem/label-studio-$LS_VERSION}}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp="$VENV/.tandem-installed"
want="label-studio==$LS_VERSION label-studio-sdk==$SDK_VERSION selenium==$SELENIUM_VERSION"
done_mark="$want +template-db"  # what a finished install wrote into the stamp
if [ "$(cat "$stamp" 2>/dev/null)" = "$done_mark" ] && [ -x "$VENV/bin/label-studio" ]; then
  echo "$VENV"
  exit 0
fi
echo "[tandem] installing $want into $VENV (a few minutes, once)" >&2
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"  # two processes installing at once would corrupt the venv
flock 9
if [ "$(cat "$stamp" 2>/dev/null)" != "$done_mark" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # shellcheck disable=SC2086
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check $want > "$VENV.install.log" 2>&1; then
    grep -v "is ignored: it is neither" "$VENV.install.log" >&2
    exit 1
  fi
  # Label Studio writes into ~/.local/share/label-studio on any command unless told otherwise.
  LABEL_STUDIO_BASE_DATA_DIR="$VENV/var" "$VENV/bin/python" -c "import label_studio, label_studio_sdk" >&2
  # A migrated, empty database: a server on a new data dir starts from a copy of it instead of
  # running every migration again (~2 min on 2 cores). Any label-studio command migrates first;
  # asking about a user that does not exist then does nothing else.
  rm -rf "$VENV/template"
  LABEL_STUDIO_BASE_DATA_DIR="$VENV/template" SENTRY_DSN= FRONTEND_SENTRY_DSN= LATEST_VERSION_CHECK=false \
    COLLECT_ANALYTICS=false "$VENV/bin/label-studio" user --username template@tandem.local \
    --data-dir "$VENV/template" > "$VENV.template.log" 2>&1 || true
  [ -s "$VENV/template/label_studio.sqlite3" ] || { cat "$VENV.template.log" >&2; exit 1; }
  echo "$done_mark" > "$stamp"
fi
echo "$VENV"
