# hookd container image.
#
#   docker build -t hookd:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -e KAFKA_BROKER=broker:9092 \
#       -e WEBHOOK_SECRET=... hookd:0.1.0
#
# The config is /etc/hookd/hookd.toml (deploy/hookd.toml); mount your own over /etc/hookd or
# point HOOKD_CONFIG elsewhere. `--target minimal` builds the edge variant (no shell, no
# package manager). docs/operations.md covers both images, Kubernetes, Quix Cloud and the size;
# `make image image-test` builds and smoke-tests both with podman.
# scripts/lint_dockerfile.sh lints this file (hadolint) and checks the install step below.

# One pinned base for both stages: the venv copied from the builder links to this exact
# interpreter (/usr/local/bin/python3.11). 3.11 is the Python the test suite runs on.
# For reproducible builds, pin the digest too: python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: the wheel, and a venv with exactly what `pip install .` installs -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the build needs (pyproject's readme is README.md), so an edit to tests, docs or
# bench does not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY hookd ./hookd

# Runtime dependencies only: no [dev] or [bench] extras. Every dependency ships manylinux
# wheels, so no compiler is needed. pip precompiles the .pyc files, which the read-only
# runtime image cannot write (start-up without them is slower). pip itself is removed from
# the venv afterwards: the runtime never installs anything.
RUN python -m venv /opt/hookd \
    && /opt/hookd/bin/pip install --no-cache-dir . \
    && /opt/hookd/bin/pip uninstall --yes pip setuptools \
    && /opt/hookd/bin/hookd --help > /dev/null

# ---- minimal: the files hookd runs with, on an empty base (docker build --target minimal) ------
# No shell, no package manager, no pip: deploy/minimal_rootfs.py copies the interpreter, the
# standard library a server needs, the venv without tests or C sources, the shared libraries
# they load and the CA bundle, then imports hookd inside the result to prove it complete.
FROM ${PYTHON_IMAGE} AS rootfs
# binutils for strip (bookworm's version; this stage is thrown away after the copy below).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/hookd /opt/hookd
COPY deploy/minimal_rootfs.py /usr/local/share/minimal_rootfs.py
RUN python /usr/local/share/minimal_rootfs.py /rootfs

FROM scratch AS minimal
ARG HOOKD_UID=10001
COPY --from=rootfs /rootfs /
COPY deploy/hookd.toml deploy/quix.toml /etc/hookd/
ENV PATH=/opt/hookd/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKD_CONFIG=/etc/hookd/hookd.toml
WORKDIR /var/lib/hookd
USER ${HOOKD_UID}:${HOOKD_UID}
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["hookd"]
CMD ["serve"]

# ---- runtime: the default image ------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# Fixed, non-root UID/GID, so Kubernetes can check runAsNonRoot and volumes can be chowned.
ARG HOOKD_UID=10001
RUN groupadd --system --gid "${HOOKD_UID}" hookd \
    && useradd --system --uid "${HOOKD_UID}" --gid hookd --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hookd \
    && mkdir -p /etc/hookd /var/lib/hookd \
    && chown hookd:hookd /var/lib/hookd

COPY --from=builder /opt/hookd /opt/hookd
COPY deploy/hookd.toml deploy/quix.toml /etc/hookd/

ENV PATH=/opt/hookd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKD_CONFIG=/etc/hookd/hookd.toml

# /var/lib/hookd: where a [spool] goes (mount a volume there); also the working directory,
# the only place the hookd user may write.
WORKDIR /var/lib/hookd
USER ${HOOKD_UID}:${HOOKD_UID}

# 8080: webhooks (server.listen). 9090: /healthz /readyz /metrics (server.admin_listen).
EXPOSE 8080 9090

# hookd drains on SIGTERM: readiness off, in-flight requests answered, at most
# kafka.ack_timeout_s + 2 s for the broker, then exit 0. Give it that long (docker stop -t 15).
STOPSIGNAL SIGTERM

# Liveness from inside the container, with only the standard library (slim has no curl).
# The start period covers kafka.connect_timeout_s (30 s): hookd opens its admin listener only
# once the broker answered and the topics exist. 127.0.0.1 works whether admin_listen is
# loopback or 0.0.0.0; the port must match admin_listen.
HEALTHCHECK --interval=15s --timeout=3s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]

ENTRYPOINT ["hookd"]
CMD ["serve"]
