#!/usr/bin/env bash
# Builds the images the smoke suite and the benchmarks use, once per
# machine, from Debian's mirror: a minimal Debian bookworm tree made by
# debootstrap, saved as a tarball. Idempotent: an existing tarball is kept.
set -euo pipefail

cache=${BANGER_TEST_CACHE:-/var/cache/banger-test}
out=$cache/debian-bookworm-minbase.tar.gz

# The distribution's kernel package, for the VM tests (as `banger kernel
# import --debian` fetches it).
kdeb=$(compgen -G "$cache/linux-image-*.deb" | head -1 || true)
if [[ -z $kdeb ]]; then
	mkdir -p "$cache"
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	[[ -n $pkg ]] || { echo "testimages: apt knows no linux-image-amd64; run apt-get update" >&2; exit 1; }
	(cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) || { echo "testimages: apt-get download $pkg failed" >&2; exit 1; }
fi

[[ -s $out ]] && { echo "$out"; exit 0; }

if ((EUID != 0)); then
	echo "testimages: debootstrap needs root; run as root or set BANGER_TEST_CACHE to a cache built by root" >&2
	exit 1
fi
mkdir -p "$cache"
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
tree=$(mktemp -d "$cache/.tree-XXXXXX")
trap 'rm -rf "$tree" "$out.tmp"' EXIT
echo "testimages: debootstrap bookworm from $mirror (once per machine)" >&2
debootstrap --variant=minbase --include=git,ca-certificates bookworm "$tree" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
	{ tail -20 "$cache/debootstrap.log" >&2; exit 1; }
# Numeric owners and xattrs, so the tarball is the tree exactly.
# Compressed as registries serve layers (gzip -6); without the downloaded
# packages and package lists, as Debian's own images ship.
tar --numeric-owner --xattrs --xattrs-include='*' -C "$tree" \
	--exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*_*' \
	-cf - . | gzip -6 -n >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
