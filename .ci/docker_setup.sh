#!/usr/bin/env bash
# Makes a Docker engine reachable for the `docker`-marked tests, and builds the Python 3.11 base
# image that docker/Dockerfile starts from when no registry can be reached.
#
#   sudo bash .ci/docker_setup.sh
#
# Idempotent: it installs only what is missing, starts dockerd only when no engine answers, and
# builds the base image only when it is not there yet. Needs root (apt-get, dockerd).
#
#   1. apt-get installs docker.io (engine 20.10), docker-compose (1.29), debootstrap, gpgv and
#      Debian's archive keyring.
#   2. dockerd starts in the background (--iptables=false: this sandbox has no iptables), and
#      `docker info` is polled until it answers, for at most DOCKERD_TIMEOUT_S seconds.
#   3. With no container registry to pull `python:3.11-slim` from, the base image is made from
#      Debian's own packages: debootstrap a minimal bookworm with python3, python3-venv and
#      ca-certificates, the archive's signature checked (--force-check-gpg: no key, no image),
#      then `docker import` it as $REVERB_FLEET_BASE_IMAGE.
#
# Environment:
#   REVERB_FLEET_BASE_IMAGE  name of the base image (default reverb-fleet-base:py3.11-bookworm;
#                            tests/test_compose.py looks for this name)
#   DEBIAN_MIRROR            mirror for debootstrap (default http://deb.debian.org/debian)
#   DOCKERD_TIMEOUT_S        seconds to wait for the engine (default 60)
#   DOCKERD_LOG              dockerd's log file (default /var/log/dockerd.log)
set -euo pipefail

BASE_IMAGE="${REVERB_FLEET_BASE_IMAGE:-reverb-fleet-base:py3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TIMEOUT_S="${DOCKERD_TIMEOUT_S:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
# Debian's archive keys: debootstrap checks the Release file's signature with them, and every
# package against the Release file's hashes, so a mirror (or the way to it) cannot change one.
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { echo "[docker_setup] $*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "[docker_setup] error: must run as root (apt-get and dockerd need it): sudo bash $0" >&2
  exit 2
fi

# 1. Packages.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v gpgv >/dev/null || missing+=(gpgv)
[ -f "$KEYRING" ] || missing+=(debian-archive-keyring)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# 2. The engine.
if docker info >/dev/null 2>&1; then
  log "a Docker engine already answers"
else
  log "starting dockerd (log: $LOG)"
  nohup dockerd --iptables=false --storage-driver=overlay2 >>"$LOG" 2>&1 &
  deadline=$((SECONDS + TIMEOUT_S))
  until docker info >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "[docker_setup] error: dockerd did not answer within ${TIMEOUT_S} s; last lines of" \
        "$LOG:" >&2
      tail -n 20 "$LOG" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "dockerd answers after $((SECONDS - deadline + TIMEOUT_S)) s"
fi

# Leftovers of a compose test that was killed before its `down -v` (projects named rftest*,
# tests/test_compose.py): their containers come back with the engine (restart: on-failure), and
# eight actors of them took the two cores from every later test run.
leftover=$(docker ps -a --filter 'label=com.docker.compose.project' \
  --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | awk '$2 ~ /^rftest/ {print $1}')
if [ -n "$leftover" ]; then
  log "removing $(echo "$leftover" | wc -l) container(s) left by an interrupted compose test"
  echo "$leftover" | xargs docker rm -f >/dev/null
fi
volumes=$(docker volume ls -q | grep '^rftest' || true)
if [ -n "$volumes" ]; then
  echo "$volumes" | xargs docker volume rm >/dev/null
fi

# 3. The base image.
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE already exists"
else
  log "building base image $BASE_IMAGE with debootstrap from $MIRROR"
  rootfs="$(mktemp -d /tmp/reverb-fleet-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --force-check-gpg --keyring="$KEYRING" --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null
  # Keep the image small: the package lists and caches are not needed at run time.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
  log "base image $BASE_IMAGE built"
fi
docker image inspect -f '[docker_setup] ready: {{.RepoTags}} {{.Size}} bytes' "$BASE_IMAGE"
docker version --format '[docker_setup] engine {{.Server.Version}}, client {{.Client.Version}}'
docker-compose version --short | sed 's/^/[docker_setup] docker-compose /'
