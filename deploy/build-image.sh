#!/usr/bin/env bash
# Build galacto's container images from the Dockerfile, as it is.
#
#   deploy/build-image.sh                      # the `serve` image: galacto:0.1.0
#   deploy/build-image.sh --train              # the `train` image: galacto-train:0.1.0
#   deploy/build-image.sh --train --torch-index-url https://download.pytorch.org/whl/cu128
#
# With a Docker engine (`docker info` answers) this is `docker build --target ...`, on the
# official python:3.11-slim-bookworm base. Without one it builds with buildah (no daemon)
# on a local Debian bookworm base made by debootstrap (Python 3.11 from Debian's packages),
# so nothing is pulled from an image registry; building the base needs root. The base,
# buildah's image store and its build caches are kept in the cache folder (default:
# .cache/images in the checkout, git-ignored); the image is run from that store with
# `buildah --root <cache>/store ...` (the script prints the command).
#
# Behind a TLS-intercepting proxy (pip fails with CERTIFICATE_VERIFY_FAILED) the CA bundle
# that trusts it is needed inside the build: --ca-bundle FILE, or by default the one pip on
# this machine is given (PIP_CERT, SSL_CERT_FILE or `cert` in a pip.conf). It is added to the
# base image (not to the Dockerfile), with PIP_CERT and SSL_CERT_FILE set to it, so it stays
# in the built image too. --ca-bundle none turns this off.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/build-image.sh [options]
  --target serve|train     image to build (default: serve)
  --train                  same as --target train
  -t, --tag NAME           image name (default: galacto:VERSION / galacto-train:VERSION)
  --engine auto|docker|buildah
                           auto (default): docker when an engine answers, else buildah
  --torch-index-url URL    train: where torch comes from (default: the Dockerfile's,
                           PyTorch's CPU wheel index)
  --torch-wheels DIR       train, buildah only: a folder of torch wheels (e.g. a local
                           +cpu wheel) used instead of an index
  --ca-bundle FILE|none    CA bundle for a TLS-intercepting proxy (default: $PIP_CERT,
                           $SSL_CERT_FILE or pip.conf's `cert` when set, else none)
  --python-image REF       docker: the Python base (default: the Dockerfile's)
  --cache-dir DIR          buildah: base, image store and caches (default: .cache/images)
  --no-cache               rebuild every layer
  -h, --help               this text
Environment: DEBIAN_MIRROR (default: debootstrap's), BUILDAH_STORAGE_DRIVER (default: overlay
where the kernel allows it, else vfs).
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n1)"
target=serve
tag=""
engine=auto
torch_index_url=""
torch_wheels=""
# the CA bundle pip is told to trust here: PIP_CERT, SSL_CERT_FILE, or `cert` in a pip.conf
pip_conf_cert() {
    local f
    for f in "${PIP_CONFIG_FILE:-}" "${XDG_CONFIG_HOME:-${HOME:-}/.config}/pip/pip.conf" \
        "${HOME:-}/.pip/pip.conf" /etc/xdg/pip/pip.conf /etc/pip.conf; do
        if [ -n "$f" ] && [ -f "$f" ]; then
            sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*\([^[:space:]]*\).*/\1/p' "$f"
        fi
    done | head -n1
}
ca_bundle="${PIP_CERT:-${SSL_CERT_FILE:-$(pip_conf_cert)}}"
python_image=""
cache_dir="${GALACTO_IMAGE_CACHE:-$repo/.cache/images}"
no_cache=()
suite=bookworm

die() { echo "build-image: $*" >&2; exit 2; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi; }

while [ $# -gt 0 ]; do
    case "$1" in
        --target) need_value "$@"; target="$2"; shift 2 ;;
        --train) target=train; shift ;;
        -t|--tag) need_value "$@"; tag="$2"; shift 2 ;;
        --engine) need_value "$@"; engine="$2"; shift 2 ;;
        --torch-index-url) need_value "$@"; torch_index_url="$2"; shift 2 ;;
        --torch-wheels) need_value "$@"; torch_wheels="$2"; shift 2 ;;
        --ca-bundle) need_value "$@"; ca_bundle="$2"; shift 2 ;;
        --python-image) need_value "$@"; python_image="$2"; shift 2 ;;
        --cache-dir) need_value "$@"; cache_dir="$2"; shift 2 ;;
        --no-cache) no_cache=(--no-cache); shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case "$target" in
    serve) tag="${tag:-galacto:$version}" ;;
    train) tag="${tag:-galacto-train:$version}" ;;
    *) die "--target is serve or train, not '$target'" ;;
esac
[ "$ca_bundle" = none ] && ca_bundle=""
if [ -n "$ca_bundle" ] && [ ! -f "$ca_bundle" ]; then die "no CA bundle at $ca_bundle"; fi
if [ -n "$torch_wheels" ] && [ ! -d "$torch_wheels" ]; then die "no folder $torch_wheels"; fi
if [ -n "$torch_wheels" ] && [ -n "$torch_index_url" ]; then
    die "--torch-wheels and --torch-index-url exclude each other"
fi
if [ "$target" != train ] && [ -n "$torch_index_url$torch_wheels" ]; then
    die "--torch-index-url and --torch-wheels are for --target train"
fi

if [ "$engine" = auto ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v buildah >/dev/null 2>&1; then
        engine=buildah
    else
        die "neither a Docker engine nor buildah found:" \
            "install Docker, or buildah, podman and debootstrap"
    fi
fi

build_args=()
if [ -n "$torch_index_url" ]; then build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index_url"); fi

# ---------------------------------------------------------------------------------------------
# docker
# ---------------------------------------------------------------------------------------------
if [ "$engine" = docker ]; then
    [ -z "$torch_wheels" ] || die "--torch-wheels needs buildah; with docker use --torch-index-url"
    if [ -n "$python_image" ]; then build_args+=(--build-arg "PYTHON_IMAGE=$python_image"); fi
    if [ -n "$ca_bundle" ]; then
        # the same base with the proxy's CA bundle: a one-layer image built from stdin
        base="${python_image:-$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$repo/Dockerfile")}"
        ctx="$(mktemp -d)"
        trap 'rm -rf "$ctx"' EXIT
        cp "$ca_bundle" "$ctx/ca-bundle.crt"
        ca=/usr/local/share/ca-bundle/ca-bundle.crt
        printf '%s\n' "FROM $base" "COPY ca-bundle.crt $ca" \
            "ENV PIP_CERT=$ca SSL_CERT_FILE=$ca" > "$ctx/Dockerfile"
        docker build -q -t galacto-base:ca "$ctx" >/dev/null
        build_args+=(--build-arg "PYTHON_IMAGE=galacto-base:ca")
    fi
    set -x
    docker build "${no_cache[@]}" "${build_args[@]}" --target "$target" -t "$tag" "$repo"
    { set +x; } 2>/dev/null
    if [ "$target" = serve ]; then
        echo "built $tag (docker); run it: docker run -p 8000:8000 -e GALACTO_API_KEYS=<key> $tag"
    else
        echo "built $tag (docker); run it: docker run --rm $tag train --help"
    fi
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# buildah, on a local Debian base
# ---------------------------------------------------------------------------------------------
[ "$engine" = buildah ] || die "--engine is auto, docker or buildah, not '$engine'"
command -v buildah >/dev/null 2>&1 \
    || die "buildah not found (apt-get install buildah podman debootstrap)"
[ -z "$python_image" ] || die "--python-image is for docker; buildah uses a local Debian base"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
mkdir -p "$cache_dir/tmp"
# buildah keeps its RUN --mount=type=cache folders and temporary files under TMPDIR
export TMPDIR="$cache_dir/tmp"

driver="${BUILDAH_STORAGE_DRIVER:-}"
if [ -z "$driver" ]; then
    if [ -f "$cache_dir/store/.driver" ]; then
        driver="$(cat "$cache_dir/store/.driver")"
    else
        probe="$(mktemp -d "$cache_dir/tmp/overlay.XXXXXX")"
        mkdir -p "$probe"/{l,u,w,m}
        driver=vfs
        if [ "$(id -u)" -eq 0 ] && mount -t overlay overlay \
            -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
            umount "$probe/m"
            driver=overlay
        fi
        rm -rf "$probe"
    fi
fi
mkdir -p "$cache_dir/store"
echo "$driver" > "$cache_dir/store/.driver"
store=(--root "$cache_dir/store" --runroot "$cache_dir/run" --storage-driver "$driver")
bh() { buildah "${store[@]}" "$@"; }

base="localhost/galacto-debian-base:$suite"
if ! bh inspect --type image "$base" >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] \
        || die "making the Debian base needs root (debootstrap); run as root or use Docker"
    command -v debootstrap >/dev/null 2>&1 \
        || die "debootstrap not found (apt-get install debootstrap)"
    command -v podman >/dev/null 2>&1 || die "podman not found (apt-get install podman)"
    rootfs="$cache_dir/rootfs.partial"
    rm -rf "$rootfs"
    echo "+ debootstrap $suite: Python 3.11 from Debian"
    mirror=()
    if [ -n "${DEBIAN_MIRROR:-}" ]; then mirror=("$DEBIAN_MIRROR"); fi
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        "$suite" "$rootfs" "${mirror[@]}" > "$cache_dir/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache_dir/debootstrap.log" >&2; die "debootstrap failed"; }
    # the mirror debootstrap used, with the suite's updates and security archive added
    url="$(awk '$1 == "deb" { print $2; exit }' "$rootfs/etc/apt/sources.list")"
    printf '%s\n' "deb $url $suite main" "deb $url $suite-updates main" \
        "deb ${url%/debian}/debian-security $suite-security main" \
        > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/apt/*.bin
    # what the official python image sets too: PATH, UTF-8 locale
    tar -C "$rootfs" -c . | podman "${store[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" >/dev/null
    rm -rf "$rootfs"
fi

if [ -n "$ca_bundle" ]; then
    # one image per bundle (named by its hash), so that the build's layer cache holds
    sum="$(sha256sum "$ca_bundle" | cut -c1-12)"
    with_ca="localhost/galacto-debian-base:$suite-ca-$sum"
    if ! bh inspect --type image "$with_ca" >/dev/null 2>&1; then
        ctr="$(bh from --pull-never "$base")"
        bh copy "$ctr" "$ca_bundle" /usr/local/share/ca-bundle/ca-bundle.crt >/dev/null
        bh config --env PIP_CERT=/usr/local/share/ca-bundle/ca-bundle.crt \
            --env SSL_CERT_FILE=/usr/local/share/ca-bundle/ca-bundle.crt "$ctr"
        bh commit --rm -q "$ctr" "$with_ca" >/dev/null
    fi
    base="$with_ca"
fi

volumes=()
if [ -n "$torch_wheels" ]; then
    # a PEP 503 index of the folder's torch wheels, mounted into the build's RUN steps
    index="$cache_dir/torch-index"
    rm -rf "$index"
    mkdir -p "$index/simple/torch"
    {
        echo "<!DOCTYPE html><html><body>"
        for w in "$torch_wheels"/torch-*.whl; do
            [ -e "$w" ] || die "no torch-*.whl in $torch_wheels"
            ln "$w" "$index/simple/torch/" 2>/dev/null || cp "$w" "$index/simple/torch/"
            echo "<a href=\"$(basename "$w")\">$(basename "$w")</a>"
        done
        echo "</body></html>"
    } > "$index/simple/torch/index.html"
    volumes=(--volume "$index:/torch-index:ro")
    build_args+=(--build-arg "TORCH_INDEX_URL=file:///torch-index/simple")
fi

set -x
# --format docker: the OCI image format has no HEALTHCHECK
buildah "${store[@]}" bud --format docker --isolation chroot --layers "${no_cache[@]}" \
    "${volumes[@]}" --build-arg "PYTHON_IMAGE=$base" "${build_args[@]}" --target "$target" \
    -t "$tag" -f "$repo/Dockerfile" "$repo"
{ set +x; } 2>/dev/null
echo "built $tag (buildah, store ${store[*]})"
echo "run it:  ctr=\$(buildah ${store[*]} from --pull-never $tag)"
if [ "$target" = serve ]; then
    echo "         buildah ${store[*]} run --isolation chroot --network host --user 10001:10001 \\"
    echo "           --env GALACTO_API_KEYS=<key> \"\$ctr\" -- galacto serve"
else
    echo "         buildah ${store[*]} run --isolation chroot --user 10001:10001 \\"
    echo "           \"\$ctr\" -- galacto train --help"
fi
