#!/bin/bash
# Build the Debian packages of DVS into OUTDIR (packaging/README.md):
#
#     bash packaging/build-deb.sh OUTDIR [dpkg-buildpackage options]
#
# Copies the tree (with git: the files git tracks or would track, as they are
# in the working tree; without git: everything but ./debian) into a temporary
# directory, makes packaging/debian its ./debian and runs
# "dpkg-buildpackage -us -uc -b" there, so the tree itself is never touched.
# DEB_BUILD_OPTIONS passes through (default: parallel=<cores>); "nocheck"
# skips the unit tests. The .deb, .buildinfo and .changes files land in OUTDIR.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: bash packaging/build-deb.sh OUTDIR [dpkg-buildpackage options]" >&2
    exit 2
fi
out=$1
shift
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

for tool in dpkg-buildpackage dpkg-parsechangelog dh; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-deb.sh: $tool not found: install dpkg-dev and debhelper" \
             "(. tools/deps.sh && dvs_install_deps)" >&2
        exit 1
    fi
done

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dvs-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/dvs-$version
mkdir "$src"

if git -C "$top" rev-parse --show-toplevel >/dev/null 2>&1; then
    # Deleted-but-tracked files are skipped (--ignore-failed-read).
    (cd "$top" && git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$src" -xf -
else
    tar -C "$top" --exclude=./debian --exclude-vcs -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"

echo "==> dpkg-buildpackage -us -uc -b in $src"
(cd "$src" &&
    DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-parallel=$(nproc)} \
    dpkg-buildpackage -us -uc -b "$@")

shopt -s nullglob
files=("$work"/*.deb "$work"/*.buildinfo "$work"/*.changes)
if [ ${#files[@]} -eq 0 ]; then
    echo "build-deb.sh: dpkg-buildpackage produced no packages" >&2
    exit 1
fi
mv "${files[@]}" "$out"/
echo "==> packages in $out:"
(cd "$out" && ls -1 ./*.deb)
