#!/usr/bin/env bash
# Stand in for the python:3.11-slim base image on a machine that reaches no image registry:
# a Debian bookworm root (debootstrap, minbase) carrying this machine's CPython under
# /usr/local, and this machine's CA bundle and pip settings, so that pip inside a build reaches
# the same package index the host does. Imported as python:3.11-slim; the Dockerfiles build on
# it unmodified. Bookworm's own python3 (3.11.2) is too old for the locks (soupsieve needs
# 3.11.5), hence the copy.
#   tests/containers/base_image.sh [TAG]     (as root; about a minute)
set -euo pipefail
TAG=${1:-python:3.11-slim}
PYTHON=$(python3 -c 'import sys; print(sys.base_prefix)')
VERSION=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$(mktemp -d /var/tmp/investflow-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

# The shared libraries the standard library's extension modules link, the zone database and
# /etc/services, as the official image has them.
debootstrap --variant=minbase \
  --include=ca-certificates,tzdata,netbase,libsqlite3-0,libssl3,libffi8,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libexpat1,libgdbm6,libnsl2,libtirpc3,libcrypt1 \
  bookworm "$ROOT" "$MIRROR" >/dev/null

# The interpreter and its standard library, without the host's installed packages, tests or Tk.
mkdir -p "$ROOT/usr/local"
tar -C "$PYTHON" \
  --exclude="lib/python$VERSION/site-packages/*" --exclude="lib/python$VERSION/test" \
  --exclude="lib/python$VERSION/idlelib" --exclude="lib/python$VERSION/tkinter" \
  --exclude="lib/python$VERSION/lib-dynload/_tkinter*" --exclude='__pycache__' \
  -cf - bin/python$VERSION lib include | tar -C "$ROOT/usr/local" -xf -
for name in python python3; do ln -sf "python$VERSION" "$ROOT/usr/local/bin/$name"; done
echo /usr/local/lib > "$ROOT/etc/ld.so.conf.d/usr-local.conf"
chroot "$ROOT" ldconfig

# This machine's trust and pip settings (an index mirror, a TLS-inspecting proxy's CA).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
chroot "$ROOT" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
for name in pip pip3; do ln -sf "pip$VERSION" "$ROOT/usr/local/bin/$name"; done
chroot "$ROOT" /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, zoneinfo, readline'
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'LABEL org.investflow.stand-in=python:3.11-slim' \
  --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "$TAG"
