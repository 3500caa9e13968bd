#!/usr/bin/env bash
# Set up tandem's virtual environment (idempotent) and run one thing in it.
#
#   bash scripts/run.sh demo     set up, then run the main job on embedded defaults
#   bash scripts/run.sh test     set up, then run the test suite (what CI runs)
#   bash scripts/run.sh setup    only set up
#
# Torch build: on a machine without an NVIDIA GPU the CPU wheel is pinned through
# constraints/cpu.txt, so nothing here can pull a multi-GB CUDA torch. On a GPU node,
# install the CUDA torch you want into .venv first; the script then keeps it
# (constraints/lock.txt pins everything but torch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TANDEM_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[tandem] creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  # TANDEM_TORCH=cuda|cpu chooses where there is no GPU to ask (the Containerfile's build).
  torch=${TANDEM_TORCH:-cpu}
  if [ -z "${TANDEM_TORCH:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch=cuda
  fi
  case "$torch" in
    cuda) constraints=constraints/lock.txt extras=dev,asr,pipeline,gpu ;;  # gpu: NVML, for MLflow's GPU system metrics
    cpu) constraints=constraints/cpu.txt extras=dev,asr,pipeline ;;
    *) echo "[tandem] TANDEM_TORCH is cuda or cpu, not $torch" >&2; exit 2 ;;
  esac
  stamp="$VENV/.tandem-installed"
  want=$(cat pyproject.toml constraints/*.txt scripts/install_*.sh 2>/dev/null | sha256sum | cut -c1-16) || true
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[tandem] installing tandem-av and its dependencies (constraints: $constraints; a few minutes the first time)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$constraints" -e ".[$extras]" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" || true
    if [ -f scripts/install_asr.sh ]; then bash scripts/install_asr.sh "$VENV" "$constraints"; fi
    if [ -f scripts/install_faces.sh ]; then bash scripts/install_faces.sh "$VENV"; fi
    "$VENV/bin/python" -c "import pipelines, torch; print('[tandem] torch', torch.__version__)"
    echo "$want" > "$stamp"
  fi
  # DeepSpeed's CPU comm op: built once here (about a minute the first time), not inside a run;
  # with the venv's ninja, which a machine without a system one (the image build) has nowhere else.
  PATH="$VENV/bin:$PATH" "$VENV/bin/python" -c "from training.engine import prepare_cpu_ops; print('[tandem] DeepSpeed', prepare_cpu_ops())" \
    2>&1 | grep "^\[tandem\]" || true
  # librosa's numba kernels: compiled and checked once here, not by parallel workers (curation/jit_cache.py).
  "$VENV/bin/python" -m curation.jit_cache 2>&1 | grep "^\[tandem\]" || true
}

case "${1:-}" in
  setup) setup ;;
  demo)
    setup
    shift
    exec "$VENV/bin/tandem" demo "$@"
    ;;
  test)
    # The annotation tests drive a real Label Studio, kept in its own venv (its pins differ), and
    # the browser tests Debian's chromium: neither needs tandem's venv, so both install beside its
    # setup (on a fresh machine ~2.5 min that would otherwise come after it).
    bash scripts/install_labelstudio.sh > /dev/null &
    labelstudio=$!
    bash scripts/install_browser.sh &
    browser=$!
    trap 'kill $labelstudio $browser 2>/dev/null || true' EXIT  # a failed setup leaves neither running
    setup
    shift
    wait $labelstudio \
      || echo "[tandem] Label Studio did not install; the annotation server tests will say why" >&2
    wait $browser || true
    trap - EXIT  # both have ended: their pids may belong to other processes by the suite's end
    # as root (CI) the browser is installed above: a browser test that would skip fails instead
    if [ "$(id -u)" = 0 ]; then export TANDEM_REQUIRE_BROWSER=1; fi
    export MLFLOW_DISABLE_TELEMETRY=1 RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    # Two workers, a test file each (module fixtures stay in one process): much of the suite waits
    # on Ray, servers and subprocesses, so two files side by side cut pytest from ~34 to 18-22 min
    # on 2 cores (docs/install.md). TANDEM_TEST_WORKERS=0 runs it in this one process (pdb, -x, -s).
    workers=${TANDEM_TEST_WORKERS:-2}
    parallel=()
    if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadfile); fi
    set +e
    "$VENV/bin/python" -m pytest -q --timeout=600 --durations=15 "${parallel[@]}" "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then
      echo "[tandem] pytest collected no tests: that is a failure" >&2
      exit 1
    fi
    exit $rc
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
