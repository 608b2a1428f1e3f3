#!/usr/bin/env bash
# Build the RTAP container image with podman (`scripts/image.sh build`) and
# smoke-test it as an operator runs it (`scripts/image.sh test`).
#
# Where base images can be pulled, the Containerfile's default base is used. Where
# they cannot (RTAP_IMAGE_BASE unset and nothing pullable), a Debian bookworm base
# is made once with debootstrap (about 40 s) and imported as
# localhost/debian:bookworm-min. The host's CA bundle goes in as the build secret
# `pipca` (pip inside the build needs it where the package index sits behind a
# proxy with its own CA); it is never stored in the image.
#
# podman on hosts without systemd as PID 1 needs explicit ulimits and runc:
# this script writes such a containers.conf and points CONTAINERS_CONF at it,
# without touching /etc. `scripts/image.sh env` prints the export for a shell.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${RTAP_IMAGE:-localhost/rtap-trio:latest}"
LOCAL_BASE="localhost/debian:bookworm-min"
CA="${RTAP_IMAGE_CA:-/etc/ssl/certs/ca-certificates.crt}"

containers_conf() {
  local conf="${XDG_RUNTIME_DIR:-/tmp}/rtap-containers.conf" nofile nproc
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  [ "$nproc" = "unlimited" ] || [ "$nproc" -gt 32768 ] && nproc=32768
  [ "$nofile" = "unlimited" ] && nofile=1048576
  cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
CONF
  echo "$conf"
}

mirror() {
  # The Debian mirror apt already uses (deb822 sources first, then sources.list).
  local uri
  uri="$(grep -hsm1 '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}')"
  [ -n "$uri" ] || uri="$(grep -hsm1 '^deb ' /etc/apt/sources.list | awk '{print $2}')"
  echo "${uri:-http://deb.debian.org/debian}"
}

local_base() {
  if podman image exists "$LOCAL_BASE"; then return; fi
  command -v debootstrap >/dev/null || { echo "image: no base: install debootstrap (or set RTAP_IMAGE_BASE)" >&2; exit 1; }
  local rootfs
  rootfs="$(mktemp -d)"
  echo "image: making $LOCAL_BASE with debootstrap from $(mirror)"
  debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
}

build() {
  local base="${RTAP_IMAGE_BASE:-}" args=()
  if [ -z "$base" ]; then
    if podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
      base="docker.io/library/python:3.11-slim-bookworm"
    else
      local_base
      base="$LOCAL_BASE"
    fi
  fi
  [ -f "$CA" ] && args+=(--secret "id=pipca,src=$CA")
  echo "image: building $IMAGE on $base"
  local started=$SECONDS
  podman build --format docker --build-arg "BASE=$base" "${args[@]}" -t "$IMAGE" -f Containerfile .
  echo "image: built $IMAGE in $((SECONDS - started)) s ($(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
}

smoke_test() {
  # The image as an operator runs it: non-root, read-only root, the demo's
  # transcript on ZeroMQ from inside, /health, the health check, a clean stop.
  local name="rtap-image-test-$$" token ports started stop_s
  token="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')"
  read -r -a ports <<<"$(.venv/bin/python -c 'from rtap_trio.bench.common import ServicePorts as P; p = P.free(); print(p.events, p.transcripts, p.telemetry)')"
  trap "podman rm -f $name >/dev/null 2>&1 || true" EXIT
  started=$SECONDS
  podman run -d --name "$name" --read-only --tmpfs /tmp --health-interval=disable \
    -e RTAP_ENVIRONMENT=pc2 -e RTAP_SECURITY__TOKEN="$token" \
    -p "127.0.0.1:${ports[0]}:6552" -p "127.0.0.1:${ports[1]}:6553" -p "127.0.0.1:${ports[2]}:8080" \
    "$IMAGE" --source demo 2> >(grep -v "systemd connection" >&2) >/dev/null
  echo "image-test: started; waiting for /health"
  for _ in $(seq 120); do
    curl -fsS "http://127.0.0.1:${ports[2]}/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fsS "http://127.0.0.1:${ports[2]}/health" | .venv/bin/python -c 'import json, sys; h = json.load(sys.stdin); assert h["status"] == "ok", h; print("image-test: /health ok, model", h["stt"]["model"])'
  echo "image-test: up in $((SECONDS - started)) s; waiting for the demo's transcript on ZeroMQ"
  .venv/bin/python - "${ports[1]}" <<'PY'
import json, sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.RCVTIMEO, 60_000)
sub.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
sub.subscribe(b"transcript")
message = json.loads(sub.recv_multipart()[1])
assert "weather" in message["text"].lower(), message["text"]
print(f"image-test: transcript from inside the container: {message['text']!r}")
PY
  podman healthcheck run "$name" && echo "image-test: HEALTHCHECK healthy"
  [ "$(podman exec "$name" id -u)" != "0" ] && echo "image-test: runs as $(podman exec "$name" id -un)"
  if podman exec "$name" touch /opt/rtap/probe 2>/dev/null; then
    echo "image-test: FAILED: the root file system is writable" >&2; exit 1
  fi
  echo "image-test: root file system is read-only"
  started=$SECONDS
  podman stop -t 10 "$name" 2> >(grep -v "systemd connection" >&2) >/dev/null
  stop_s=$((SECONDS - started))
  [ "$(podman inspect "$name" --format '{{.State.ExitCode}}')" = "0" ] || { echo "image-test: FAILED: exit code not 0" >&2; podman logs "$name" | tail -20; exit 1; }
  [ "$stop_s" -lt 10 ] || { echo "image-test: FAILED: stop took ${stop_s} s" >&2; exit 1; }
  echo "image-test: stopped cleanly (exit 0) in ${stop_s} s of a 10 s grace period"
  echo "image-test: passed"
}

CONTAINERS_CONF="$(containers_conf)"
export CONTAINERS_CONF
case "${1:-build}" in
  build) build ;;
  test) smoke_test ;;
  env) echo "export CONTAINERS_CONF=$CONTAINERS_CONF" ;;
  *) echo "usage: scripts/image.sh [build|test|env]" >&2; exit 2 ;;
esac
