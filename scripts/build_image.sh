#!/usr/bin/env bash
# Build the image that infra/ray/kuberay-cluster.yaml runs, with podman.
#
#   bash scripts/build_image.sh           tandem:latest: CUDA torch, for the cluster's head and GPU workers
#   bash scripts/build_image.sh cpu       tandem:cpu: CPU torch, for CPU-only clusters and this smoke test
#   bash scripts/build_image.sh cpu smoke build tandem:cpu, then run `tandem --help` and
#                                         `tandem curate` on one sample clip inside it
#
# The Containerfile installs tandem with `scripts/run.sh setup`, so the image gets the same
# constraints, extras and install scripts as a workstation's .venv (TANDEM_TORCH picks the branch
# that nvidia-smi picks there). TANDEM_IMAGE overrides the tag.
#
# Base image: debian:bookworm-slim (Python 3.11). Where no registry can be reached, the base is
# made from Debian's packages with debootstrap and imported (TANDEM_BASE_IMAGE names another).
# pip inside the build uses this machine's pip configuration (its indexes, wheel folders, CA
# bundle, constraints): those files are mounted read-only into the build steps, never copied
# into the image.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${1:-cuda}
case "$TORCH" in
  cuda) IMAGE=${TANDEM_IMAGE:-tandem:latest} ;;
  cpu) IMAGE=${TANDEM_IMAGE:-tandem:cpu} ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
BASE=${TANDEM_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
DEBOOTSTRAP_BASE=localhost/debian-debootstrap:bookworm
command -v podman >/dev/null || { echo "[build_image] needs podman (apt-get install podman)" >&2; exit 1; }

base_image() {
  if podman image exists "$BASE" || timeout 120 podman pull -q "$BASE" >/dev/null 2>&1; then
    echo "$BASE"
    return
  fi
  if ! podman image exists "$DEBOOTSTRAP_BASE"; then
    command -v debootstrap >/dev/null \
      || { echo "[build_image] $BASE cannot be pulled and debootstrap is missing" >&2; exit 1; }
    echo "[build_image] $BASE cannot be pulled: making $DEBOOTSTRAP_BASE with debootstrap" >&2
    rootfs=$(mktemp -d /var/tmp/tandem-rootfs.XXXXXX)
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBOOTSTRAP_BASE" >&2
    rm -rf "$rootfs"
  fi
  echo "$DEBOOTSTRAP_BASE"
}

# This machine's pip settings as one pip.conf whose local paths are remapped under /host (so they
# cover none of the image's own files), plus the --volume flags that mount them there, read-only
# and during the build only. A local index (.../simple) is mounted with its parent, where its
# pages' relative links lead.
pip_settings() {
  local staging=$1
  python3 - "$staging" <<'EOF'
import os, subprocess, sys

staging = sys.argv[1]
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings, paths = {}, set()
for line in listed.splitlines():  # key='value'; ':env:.key' comes from a PIP_* variable
    key, _, value = line.partition("=")
    name = key.split(".", 1)[1]
    words = []
    for word in value.strip("'\"").replace("\\n", " ").split():
        path = word.removeprefix("file://")
        if path.startswith("/") and os.path.exists(path):
            paths.add(os.path.dirname(path) if os.path.basename(path) == "simple" else path)
            word = word.replace(path, "/host" + path)
        words.append(word)
    settings[name] = " ".join(words)
with open(os.path.join(staging, "pip.conf"), "w") as conf:
    conf.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
print(f"--volume={staging}/pip.conf:/host/pip.conf:ro")
for path in sorted(paths):
    print(f"--volume={path}:/host{path}:ro")
EOF
}

# Where the OCI runtime cannot start a container (a sandbox with hybrid cgroups or without
# CAP_SYS_RESOURCE), the build's steps and the smoke test run with chroot isolation instead.
isolation() {
  local why
  if why=$(podman run --rm "$1" true 2>&1); then echo oci; return; fi
  echo "[build_image] podman cannot start a container here (${why##*$'\n'}): chroot isolation" >&2
  echo chroot
}

# Run a command inside the image, in a throwaway container without network.
run_in_image() {
  if [ "$ISOLATION" = oci ]; then
    podman run --rm --network=none --shm-size=2g "$IMAGE" "$@"
  else  # chroot isolation shares the host's network
    local container status=0
    container=$(buildah from -q "$IMAGE")
    buildah run --isolation chroot "$container" -- "$@" || status=$?
    buildah rm "$container" >/dev/null
    return $status
  fi
}

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mapfile -t pip_volumes < <(pip_settings "$staging")
base=$(base_image)
ISOLATION=$(isolation "$base")
echo "[build_image] building $IMAGE (torch: $TORCH) on $base, $ISOLATION isolation"
podman build --isolation="$ISOLATION" --network=host --file Containerfile --tag "$IMAGE" \
  --build-arg BASE="$base" --build-arg TANDEM_TORCH="$TORCH" \
  --build-arg PIP_CONFIG_FILE=/host/pip.conf "${pip_volumes[@]}" .
podman image ls "$IMAGE"

if [ "${2:-}" = smoke ]; then
  echo "[build_image] smoke test: tandem --help, then tandem curate on one sample clip"
  run_in_image bash -euc '
    tandem --help | head -3
    ray --version && command -v wget  # what KubeRay runs in the container
    timeout 120 python -c "from training.engine import prepare_cpu_ops; print(prepare_cpu_ops())"  # built at setup
    python -c "from curation.sample_media import make_clip; make_clip(\"/tmp/raw/clip.mp4\", [1.5, 1.5], beeps=True)"
    tandem curate /tmp/raw --out /tmp/curated "skip=[transcribe]"  # no ASR weights in the image
    ls /tmp/curated /tmp/curated/shards
    echo "[smoke] pip freeze" && pip freeze --exclude-editable && echo "[smoke] end"'
fi
