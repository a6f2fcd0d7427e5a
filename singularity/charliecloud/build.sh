#!/usr/bin/env bash
# Build, or reuse, hpcseg's Charliecloud image: a Debian 12 directory tree that `ch-run` runs, with its own
# Python 3.11 venv holding CPU torch, hpcseg's dependencies and hpcseg itself (installed from this checkout,
# not editable). The last line on stdout is the image's path; everything else goes to stderr.
#
#   singularity/charliecloud/build.sh            build or reuse; print the image folder
#   singularity/charliecloud/build.sh --key      print the cache key only (no build, no install)
#   singularity/charliecloud/build.sh --tools    install ch-run and mmdebstrap when missing, then stop
#
# Three cached layers, each built in a temporary folder and renamed into place at the end (a killed build
# leaves nothing that looks finished), under one lock (concurrent callers wait, then reuse); each later
# layer starts as a hard-linked copy of the one before, so they share disk space:
#   $CACHE/base-<key>  mmdebstrap minbase + python3 + venv         key: suite + packages
#   $CACHE/deps-<key>  base + venv + torch + install_requires       key: base + install_requires
#                                                                      + torch pin
#   $CACHE/<key>       deps + hpcseg from this checkout             key: deps + package sources + mount points
# Each key also holds the code of the functions that build its layer (`declare -f`), so changing how a
# layer is made rebuilds it, while comments and the rest of this file do not.
# Measured on the project's 2-core machine under load 7-10: reuse 0.05 s; a changed source file ~15 s (project
# layer only); from nothing 4.5-5.5 min (base 1.5-2.2, deps 2-2.8, project 0.25), 1.7 GB, mostly torch.
#
# pip inside the image is configured like pip on this host: every setting `pip config list` reports (files
# and PIP_* variables) is passed on, and each local folder those settings name (find-links, file:// indexes,
# a constraints file, a certificate bundle) is bound into the build at the same path. A machine with a local
# CPU torch wheel thus uses it; elsewhere pip asks its index (HPCSEG_CH_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# avoids a CUDA build of torch).
#
# Environment:
#   HPCSEG_CH_CACHE   cache folder (default /var/cache/hpcseg/charliecloud)
#   HPCSEG_CH_MOUNTS  extra empty folders created in the image as bind targets (default
#                     "/scratch /project /work /data"); ch-run 0.31 binds only onto folders that exist
#   HPCSEG_CH_KEEP    project images kept in the cache, newest first (default 3); older ones are removed
#   HPCSEG_CH_TORCH_INDEX  an extra package index for torch only (default none)
#   TORCH_VERSION     torch pin (default 2.13.0, as the Makefile's)
#   PY                host Python whose pip configuration is passed on (default .venv/bin/python, python3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${HPCSEG_CH_CACHE:-/var/cache/hpcseg/charliecloud}
MOUNTS=${HPCSEG_CH_MOUNTS-/scratch /project /work /data}
KEEP=${HPCSEG_CH_KEEP:-3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${HPCSEG_CH_TORCH_INDEX:-}
SUITE=bookworm                      # its python3 is 3.11, the ABI of the CPU torch wheel
BASE_PACKAGES=python3,python3-venv,ca-certificates
VENV=/opt/hpcseg/venv
IMAGE_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SOURCES=(setup.cfg pyproject.toml README.md hpcseg templates jobs)
if [ -z "${PY:-}" ]; then
    PY=python3
    [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
fi

say() { printf 'charliecloud-build [%3ds]: %s\n' "$SECONDS" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------------ tools
ensure_tools() {
    have ch-run && have mmdebstrap && return 0
    [ "$(id -u)" = 0 ] || die "ch-run or mmdebstrap missing and not root: apt-get install charliecloud-runtime mmdebstrap"
    have apt-get || die "ch-run or mmdebstrap missing and no apt-get: install Charliecloud (>= 0.31) and mmdebstrap"
    say "installing charliecloud-runtime and mmdebstrap with apt-get"
    local log; log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            charliecloud-runtime mmdebstrap >"$log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            charliecloud-runtime mmdebstrap >>"$log" 2>&1 || { tail -n 20 "$log" >&2; rm -f "$log"; die "apt-get install failed"; }
    fi
    rm -f "$log"
    have ch-run && have mmdebstrap || die "apt-get ran but ch-run or mmdebstrap is still not on PATH"
}

# ------------------------------------------------------------------------------------------------ keys
# install_requires from setup.cfg, one a line, without torch, which goes in first and pinned.
requirements() {
    "$PY" - "$ROOT/setup.cfg" <<'EOF'
import configparser, re, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
for req in cfg["options"]["install_requires"].split("\n"):
    if req.strip() and re.split(r"[<>=!~ \[;]", req.strip())[0].lower() != "torch":
        print(req.strip())
EOF
}
sha() { sha256sum | cut -c1-16; }
# A layer's key holds the code that builds it (bash's own listing of the functions: comments and the
# other functions do not count), the settings it reads, and the key of the layer below.
base_key() { { declare -f build_base; echo "$SUITE minbase $BASE_PACKAGES"; } | sha; }
# The dependency layer installs install_requires only: test extras, pytest settings or a version bump in
# setup.cfg must not cost a torch reinstall (the project layer, keyed on setup.cfg itself, picks them up).
deps_key() {
    { base_key; declare -f build_deps ch_build collect_pip_config requirements; requirements
      echo "$TORCH_VERSION $TORCH_INDEX $IMAGE_PATH"; } | sha
}
# Content only (sorted names, fixed times and owners): the same checkout gives the same key anywhere.
sources_tar() {
    tar -C "$ROOT" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${SOURCES[@]}"
}
image_key() { { deps_key; declare -f build_image; echo "mounts=$MOUNTS"; sources_tar; } | sha; }

# ------------------------------------------------------------------------------------------------ pip config
# PIP_* settings for the image's pip (one NAME=VALUE a line) and the host folders they name (BINDS).
PIP_ENV=()
BINDS=()
collect_pip_config() {
    local line name value tok path
    while IFS= read -r line; do
        [[ "$line" =~ ^[^.]*\.([A-Za-z0-9_-]+)=\'(.*)\'$ ]] || continue
        name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
        name=PIP_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
        # pip lists PIP_* variables (":env:") first; they win over its files, as in pip itself.
        [[ " ${PIP_ENV[*]%%=*} " == *" $name "* ]] && continue
        PIP_ENV+=("$name=$value")
        for tok in $value; do
            path=${tok#file://}
            [[ "$path" == /* ]] || continue
            # A file's folder; an index's parent too: its pages link to files beside it (../../files/x.whl).
            [ -f "$path" ] && path=$(dirname "$path")
            [[ "$name" == *INDEX_URL ]] && path=$(dirname "$path")
            if [ -d "$path" ] && [[ " ${BINDS[*]} " != *" $path "* ]]; then BINDS+=("$path"); fi
        done
    done < <("$PY" -m pip config list 2>/dev/null || true)
}

# ch_build IMAGE CMD...: run CMD in IMAGE, writable, with a clean environment and the host's pip settings.
ch_build() {
    local img=$1 b; shift
    local args=(-w --env-no-expand --unset-env='*' --set-env="PATH=$IMAGE_PATH" --set-env=HOME=/root
                --set-env=LC_ALL=C.UTF-8 --set-env=PIP_NO_CACHE_DIR=1 --set-env=PIP_DISABLE_PIP_VERSION_CHECK=1
                --set-env=PYTHONDONTWRITEBYTECODE=1)
    for b in "${PIP_ENV[@]}"; do args+=(--set-env="$b"); done
    for b in "${BINDS[@]}"; do args+=(-b "$b:$b"); done
    USER=${USER:-$(id -un)} ch-run "${args[@]}" "$img" -- "$@"
}

# ------------------------------------------------------------------------------------------------ layers
build_base() {
    local out=$1 tmp=$CACHE/.tmp-base-$$
    say "building the base layer (mmdebstrap $SUITE $BASE_PACKAGES, one to two minutes) in $tmp"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$tmp" >&2 \
        || die "mmdebstrap $SUITE failed (is the Debian mirror reachable?)"
    mv -T "$tmp" "$out"
}

build_deps() {
    local base=$1 out=$2 tmp=$CACHE/.tmp-deps-$$ b
    say "building the dependency layer in $tmp"
    # Hard links: every layer is read-only once renamed into place; later steps only add files.
    cp -al "$base" "$tmp"
    local made=()
    for b in "${BINDS[@]}"; do [ -e "$tmp$b" ] || { mkdir -p "$tmp$b"; made+=("$tmp$b"); }; done
    # The image's environment: ch-run --set-env (no argument) reads it.
    mkdir -p "$tmp/ch"
    printf '%s\n' "PATH=$IMAGE_PATH" PYTHONNOUSERSITE=1 LC_ALL=C.UTF-8 HPCSEG_IN_CONTAINER=1 >"$tmp/ch/environment"
    requirements >"$tmp/opt-requirements.txt" || die "cannot read install_requires from setup.cfg"
    mkdir -p "$tmp/opt/hpcseg" && mv "$tmp/opt-requirements.txt" "$tmp/opt/hpcseg/requirements.txt"
    say "installing torch==$TORCH_VERSION and hpcseg's dependencies into $VENV"
    local torch_extra=()
    [ -n "$TORCH_INDEX" ] && torch_extra=(--extra-index-url "$TORCH_INDEX")
    ch_build "$tmp" /bin/sh -ec "
        python3 -m venv $VENV
        $VENV/bin/pip install -q --upgrade 'pip>=23' 'setuptools>=64' wheel
        $VENV/bin/pip install -q ${torch_extra[*]} torch==$TORCH_VERSION
        $VENV/bin/pip freeze | grep -i '^torch==' >/opt/hpcseg/constraints.txt
        $VENV/bin/pip install -q -c /opt/hpcseg/constraints.txt -r /opt/hpcseg/requirements.txt
    " >&2 || die "pip install inside the image failed (see above)"
    for b in "${made[@]}"; do rmdir "$b" 2>/dev/null || true; done   # the build's mount points, if empty
    mv -T "$tmp" "$out"
}

build_image() {
    local deps=$1 out=$2 tmp=$CACHE/.tmp-img-$$ m
    say "building the project layer in $tmp"
    # Hard links: the deps layer is never written after its rename, and pip only adds files here.
    cp -al "$deps" "$tmp"
    rm -rf "$tmp/opt/hpcseg/src" && mkdir -p "$tmp/opt/hpcseg/src"
    sources_tar | tar -C "$tmp/opt/hpcseg/src" -xf -
    for m in $MOUNTS; do
        [[ "$m" == /* ]] || die "HPCSEG_CH_MOUNTS: $m is not an absolute path"
        mkdir -p "$tmp$m"
    done
    ch_build "$tmp" /bin/sh -ec "
        cd /opt/hpcseg/src
        # Offline and quick: the build backend (setuptools, wheel) is in the deps layer already.
        $VENV/bin/pip install -q --no-deps --no-build-isolation --no-index .
        share=\$($VENV/bin/python -c 'import sys; print(sys.prefix)')/share/hpcseg
        mkdir -p \"\$share\"
        for d in templates jobs; do [ -e \"\$share/\$d\" ] || cp -r \"\$d\" \"\$share/\"; done
        rm -rf build
        cd /
        hpcseg jobs >/dev/null
        python -c 'import torch, hpcseg.train.runner; print(\"image check: torch\", torch.__version__)'
    " >&2 || die "installing hpcseg into the image failed (see above)"
    mv -T "$tmp" "$out"
}

# Old project images (least recently used first) beyond HPCSEG_CH_KEEP, and layers the current key does
# not use. Renamed away at once (a running job keeps its open files), deleted in the background: removing
# a 1.7 GB tree takes the better part of a minute on a busy machine, and nobody should wait for it.
prune() {
    local keep=$1 old
    {
        find "$CACHE" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{16}' -printf '%T@ %p\n' \
            | sort -rn | cut -d' ' -f2- | tail -n +"$((KEEP + 1))"
        for old in "$CACHE"/deps-* "$CACHE"/base-*; do
            if [ -d "$old" ] && [ "$old" != "$CACHE/deps-$(deps_key)" ] && [ "$old" != "$CACHE/base-$(base_key)" ]; then
                echo "$old"
            fi
        done
    } | while read -r old; do
        [ "$old" = "$keep" ] && continue
        say "removing old layer $old"
        mv -T "$old" "$CACHE/.trash-$(basename "$old")-$$"
    done
    setsid rm -rf "$CACHE"/.trash-* </dev/null >/dev/null 2>&1 &
}

main() {
    case "${1:-}" in
        --key) image_key; return ;;
        --tools) ensure_tools; return ;;
        "") ;;
        *) die "unknown argument $1 (use --key, --tools or nothing)" ;;
    esac
    local key out base deps t0=$SECONDS
    key=$(image_key)
    out=$CACHE/$key
    if [ -d "$out" ]; then
        touch "$out"
        printf '%s\n' "$out"
        return
    fi
    ensure_tools
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [ ! -d "$out" ]; then
        rm -rf "$CACHE"/.tmp-*          # leftovers of killed builds: we hold the lock, nobody else builds
        collect_pip_config
        base=$CACHE/base-$(base_key)
        deps=$CACHE/deps-$(deps_key)
        [ -d "$base" ] || [ -d "$deps" ] || build_base "$base"
        [ -d "$deps" ] || build_deps "$base" "$deps"
        build_image "$deps" "$out"
        prune "$out"
        say "built $out in $((SECONDS - t0)) s ($(du -sh "$out" | cut -f1) on disk, hard links shared with $deps)"
    fi
    touch "$out"
    printf '%s\n' "$out"
}

main "$@"
