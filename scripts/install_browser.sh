#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the browser tests (the Label Studio labeling page,
# the MLflow and Dagster UIs). apt needs root, as in CI; elsewhere this says what to run and the
# browser tests skip, naming the same command. About 45 s the first time, nothing after.
set -uo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[tandem] not root: the browser tests will skip (as root: apt-get install -y chromium chromium-driver)" >&2
  exit 0
fi
echo "[tandem] installing Debian's chromium and chromium-driver for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium chromium-driver > /dev/null 2>&1 \
  || { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium chromium-driver > /dev/null 2>&1; } \
  || echo "[tandem] chromium did not install: the browser tests will say why" >&2
