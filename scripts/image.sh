#!/usr/bin/env bash
# Build hookd's two images with podman, on a machine without a Docker engine:
#   localhost/hookd:latest   the Dockerfile's default target
#   localhost/hookd:minimal  --target minimal: no shell, no package manager (the edge variant)
# The base is the Dockerfile's default (python:3.11.14-slim-bookworm) when it can be pulled;
# where no container registry is reachable, a Debian base with Python 3.11 is built from
# Debian's packages with mmdebstrap, once, as localhost/debian-python:bookworm.
# Installs podman, runc and mmdebstrap with apt-get when they are missing (as root).
#
#   scripts/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=localhost/debian-python:bookworm
DEFAULT_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)

missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" > /dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
        echo "image: installing ${missing[*]}"
        apt-get install -y -q "${missing[@]}" > /dev/null
    else
        echo "image: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 2
    fi
fi

if podman image exists "$DEFAULT_BASE" \
    || timeout 60 podman pull -q "docker.io/library/$DEFAULT_BASE" > /dev/null 2>&1; then
    base=$DEFAULT_BASE
else
    if ! podman image exists "$LOCAL_BASE"; then
        echo "image: $DEFAULT_BASE cannot be pulled; building $LOCAL_BASE from Debian's packages"
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        mmdebstrap --quiet --variant=minbase \
            --include=python3.11,python3.11-venv,python-is-python3,ca-certificates \
            bookworm "$tmp/base.tar"
        podman import --quiet "$tmp/base.tar" "$LOCAL_BASE" > /dev/null
    fi
    base=$LOCAL_BASE
fi

# pip in the build trusts what this machine's pip trusts (a proxy's CA, say): its pip.conf and
# CA bundle are mounted for the RUN steps only, never into a layer.
mounts=()
for file in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
    [[ -f $file ]] && mounts+=(-v "$file:$file:ro")
done
# --format docker keeps the HEALTHCHECK (OCI images drop it); chroot isolation and the host
# network work where podman's default runtime and network do not (no systemd, no netns).
build=(podman build --quiet --isolation chroot --network host --format docker
    --build-arg "PYTHON_IMAGE=$base" "${mounts[@]}")
"${build[@]}" -t localhost/hookd:latest . > /dev/null
"${build[@]}" --target minimal -t localhost/hookd:minimal . > /dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' localhost/hookd
