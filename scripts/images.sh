#!/usr/bin/env bash
# Build the MiMo Serve images from docker/Dockerfile and docker/Dockerfile.sglang (`make images`).
#
#   scripts/images.sh                 # both images: $IMAGE_REPO:$IMAGE_TAG and $IMAGE_REPO-sglang:$IMAGE_TAG
#   TORCH=none scripts/images.sh      # the main image without torch (tag suffix -slim)
#   ONLY=main scripts/images.sh       # one image: main | sglang
#   PARALLEL=0 scripts/images.sh      # the SGLang image after the main one, not beside it
#   scripts/images.sh conf            # print the containers.conf this script runs podman with (if any)
#
# With Docker, or podman on a machine that can pull, the Dockerfiles build as they are. Where no base
# image can be pulled (BASE=local, chosen automatically when the pull fails), the script makes a Debian
# bookworm base once with debootstrap from the mirror apt uses, builds a stand-in for
# python:3.11-slim-bookworm on it (docker/standin/python.Dockerfile) and, unless SGLANG_IMAGE names an
# image that is present, a stand-in SGLang base (docker/standin/sglang.Dockerfile: no real SGLang; the
# image is tagged -standin so it is never mistaken for a release). The host's pip configuration, CA
# bundle and local wheel directories are mounted read-only into the build steps, never baked in.
# Layers are cached by the builder: a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/mimo-serve/mimo-serve}
IMAGE_TAG=${IMAGE_TAG:-$VERSION}
TORCH=${TORCH:-cpu}
ONLY=${ONLY:-all}
BASE=${BASE:-auto}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
SGLANG_IMAGE=${SGLANG_IMAGE:-lmsysorg/sglang:v0.5.13}
STATE=${MIMO_IMAGES_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/mimo-serve/images}
DEBIAN_IMAGE=localhost/mimo-serve/debian:bookworm
STANDIN_PYTHON=localhost/mimo-serve/python-standin:$PYTHON_VERSION-slim-bookworm
STANDIN_SGLANG=localhost/mimo-serve/sglang-standin:latest

log() { echo "images: $*" >&2; }
die() { log "$*"; exit 2; }

builder() {
  if [[ -n ${BUILDER:-} ]]; then echo "$BUILDER"
  elif command -v podman >/dev/null; then echo podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker
  else echo none; fi
}

ensure_podman() {
  # podman (and debootstrap for the local base) from Debian, on a fresh root machine.
  local need=()
  command -v podman >/dev/null || need+=(podman runc uidmap)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  ((${#need[@]})) || return 0
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || die "please install: ${need[*]} (or Docker)"
  log "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

containers_conf() {
  # runc on cgroup v1 hosts (crun refuses hybrid cgroups) and container ulimits within the host's hard
  # limits (the default nofile of 1048576 fails where the host allows less).
  mkdir -p "$STATE"
  local conf=$STATE/containers.conf nproc
  nproc=$(ulimit -Hu)
  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768  # runc failed to set the host's 96364 here
  {
    echo "[containers]"
    echo "default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", \"nproc=$nproc:$nproc\"]"
    echo "[engine]"
    echo 'events_logger = "file"'
    if [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]] && command -v runc >/dev/null; then
      echo 'runtime = "runc"'
      echo 'cgroup_manager = "cgroupfs"'
    fi
  } >"$conf"
  echo "$conf"
}

pip_mounts() {
  # The host's effective pip settings as one /etc/pip.conf for the build steps, with every local path
  # they name (CA bundle, constraints, find-links, file:// indexes) mounted read-only at the same place.
  local py
  py=$(command -v python3) || return 0
  [[ -x .venv/bin/python ]] && py=.venv/bin/python
  "$py" -m pip config list 2>/dev/null | "$py" scripts/pip_build_conf.py "$STATE/pip.conf"
}

apt_mirror() {
  # The Debian mirror apt uses here (deb822 .sources or one-line .list), else deb.debian.org.
  local found
  found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -n 's/^URIs: *\(\S*debian\)$/\1/p; s/^deb \(\S*debian\) bookworm .*/\1/p' | head -1) || true
  echo "${found:-http://deb.debian.org/debian}"
}

ensure_debian_base() {
  podman image exists "$DEBIAN_IMAGE" && return 0
  local mirror root start=$SECONDS
  mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
  root=$(mktemp -d "${TMPDIR:-/tmp}/mimo-debian-XXXXXX")
  log "making $DEBIAN_IMAGE with debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
  tar -C "$root" -c . | podman import - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$root"
  log "made $DEBIAN_IMAGE in $((SECONDS - start)) s"
}

can_pull() {
  podman image exists "$1" && return 0
  timeout "${PULL_TIMEOUT_S:-60}" podman pull -q "$1" >/dev/null 2>&1
}

build_podman() {
  ensure_podman
  export CONTAINERS_CONF
  CONTAINERS_CONF=$(containers_conf)
  local python_image="python:$PYTHON_VERSION-slim-bookworm" start
  local -a mounts=() common=(--layers --pull=never)
  mapfile -t mounts < <(pip_mounts)
  if [[ $BASE == auto ]]; then
    if can_pull "docker.io/library/$python_image"; then BASE=pull; else BASE=local; fi
  fi
  if [[ $BASE == local ]]; then
    ensure_debian_base
    log "building the stand-in for $python_image"
    start=$SECONDS
    podman build "${common[@]}" "${mounts[@]}" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
      -f docker/standin/python.Dockerfile -t "$STANDIN_PYTHON" docker/standin
    log "built $STANDIN_PYTHON in $((SECONDS - start)) s"
    python_image=$STANDIN_PYTHON
  fi
  # The SGLang image needs only the stand-in, so it builds beside the main image (two cores: the builds
  # wait on the network and the disk as much as on the CPU); its lines are prefixed "sglang| ".
  local sglang_pid=""
  if [[ $ONLY == all && ${PARALLEL:-1} == 1 ]]; then
    (set -o pipefail; build_sglang_podman 2>&1 | sed -u 's/^/sglang| /' >&2) &
    sglang_pid=$!
  elif [[ $ONLY == sglang ]]; then
    build_sglang_podman
  fi
  if [[ $ONLY != sglang ]]; then
    build_one podman build "${common[@]}" "${mounts[@]}" --build-arg "PYTHON_IMAGE=$python_image" \
      --build-arg "TORCH=$TORCH" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-$(torch_index)}" \
      --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile -t "$(main_tag)" .
  fi
  if [[ -n $sglang_pid ]]; then
    wait "$sglang_pid" || die "the SGLang image failed (its lines above start with sglang|)"
  elif [[ $ONLY == all ]]; then
    build_sglang_podman
  fi
}

build_sglang_podman() {
  # Uses build_podman's python_image, common and mounts.
  local sglang_image=$SGLANG_IMAGE sglang_tag=""
  if ! can_pull "$sglang_image"; then
    log "no $sglang_image here: building against a stand-in SGLang base (not the real SGLang)"
    podman build "${common[@]}" "${mounts[@]}" --build-arg "PYTHON_IMAGE=$python_image" \
      -f docker/standin/sglang.Dockerfile -t "$STANDIN_SGLANG" docker/standin
    sglang_image=$STANDIN_SGLANG sglang_tag=-standin
  fi
  build_one podman build "${common[@]}" "${mounts[@]}" --build-arg "SGLANG_IMAGE=$sglang_image" \
    --ignorefile docker/Dockerfile.sglang.dockerignore -f docker/Dockerfile.sglang \
    -t "$IMAGE_REPO-sglang:$IMAGE_TAG$sglang_tag" .
}

torch_index() {
  # The CPU wheel index, unless pip's own configuration already offers torch locally (find-links).
  if [[ -f $STATE/pip.conf ]] && grep -q '^find-links' "$STATE/pip.conf"; then
    echo "file://$STATE/no-index"
  else
    echo "https://download.pytorch.org/whl/cpu"
  fi
}

main_tag() {
  if [[ $TORCH == none ]]; then echo "$IMAGE_REPO:$IMAGE_TAG-slim"; else echo "$IMAGE_REPO:$IMAGE_TAG"; fi
}

build_one() {
  local start=$SECONDS tag
  tag=$(printf '%s\n' "$@" | sed -n '/^-t$/{n;p}')
  log "building $tag"
  "$@"
  log "built $tag in $((SECONDS - start)) s"
}

build_docker() {
  [[ $ONLY == sglang ]] || build_one docker build --build-arg "TORCH=$TORCH" -f docker/Dockerfile -t "$(main_tag)" .
  [[ $ONLY == main ]] || build_one docker build --build-arg "SGLANG_IMAGE=$SGLANG_IMAGE" \
    -f docker/Dockerfile.sglang -t "$IMAGE_REPO-sglang:$IMAGE_TAG" .
}

case "${1:-build}" in
  conf)
    [[ $(builder) == podman ]] && containers_conf
    ;;
  build)
    mkdir -p "$STATE/no-index"
    case $(builder) in
      podman) build_podman ;;
      docker) build_docker ;;
      *) ensure_podman && build_podman ;;
    esac
    ;;
  *) die "usage: $0 [build|conf]" ;;
esac
