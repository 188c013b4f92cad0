#!/usr/bin/env bash
# Builds the images the tests, the benchmarks and `make run` use, once per
# machine, from Debian's mirror with debootstrap, each saved as a tarball
# in the cache. Idempotent: a tarball is kept while its package list
# (FLAVOUR.tar.gz.pkgs beside it) is the one asked for.
#
#   scripts/testimages.sh            minbase and systemd (the tests' images)
#                                    and Debian's kernel package
#   scripts/testimages.sh FLAVOUR…   those only; prints each tarball's path
#
# Flavours:
#   minbase  a minimal Debian bookworm with git: the default test image
#   systemd  minbase with systemd as /sbin/init, kmod, Docker (docker.io
#            and apparmor, which apt would bring as a recommendation),
#            busybox and iproute2: the tests of an image's own init and
#            of Docker inside a VM
#   dev      a development machine: the systemd flavour with udev,
#            build-essential, curl, sudo, less and an editor (make run's
#            offline image)
set -euo pipefail

cache=${BANGER_TEST_CACHE:-/var/cache/banger-test}

# kernel: the distribution's kernel package, for the VM tests (as `banger
# kernel import --debian` fetches it).
kernel() {
	local kdeb pkg
	kdeb=$(compgen -G "$cache/linux-image-*.deb" | head -1 || true)
	[[ -z $kdeb ]] || return 0
	mkdir -p "$cache"
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	[[ -n $pkg ]] || { echo "testimages: apt knows no linux-image-amd64; run apt-get update" >&2; return 1; }
	(cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) || { echo "testimages: apt-get download $pkg failed" >&2; return 1; }
}

systemd_pkgs=systemd,systemd-sysv,dbus,kmod,docker.io,apparmor,busybox,iproute2,procps,git,ca-certificates

# includes FLAVOUR: the packages debootstrap adds to minbase.
includes() {
	case $1 in
	minbase) echo git,ca-certificates ;;
	systemd) echo "$systemd_pkgs" ;;
	dev) echo "$systemd_pkgs,udev,build-essential,curl,sudo,less,vim-tiny,openssh-client,xz-utils,bash-completion" ;;
	*)
		echo "testimages: unknown flavour $1 (minbase, systemd or dev)" >&2
		return 1
		;;
	esac
}

# build FLAVOUR: its tarball, made once.
build() {
	local flavour=$1 out pkgs tree mirror
	out=$cache/debian-bookworm-$flavour.tar.gz
	pkgs=$(includes "$flavour")
	# Kept while it was built with the packages asked for now.
	if [[ -s $out && $(cat "$out.pkgs" 2>/dev/null || echo git,ca-certificates) == "$pkgs" ]]; then
		echo "$out"
		return
	fi
	if ((EUID != 0)); then
		echo "testimages: debootstrap needs root; run as root or set BANGER_TEST_CACHE to a cache built by root" >&2
		return 1
	fi
	mkdir -p "$cache"
	mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
	mirror=${mirror:-http://deb.debian.org/debian}
	tree=$(mktemp -d "$cache/.tree-XXXXXX")
	# shellcheck disable=SC2064 # expanded now: these are this build's
	trap "rm -rf '$tree' '$out.tmp'" EXIT
	echo "testimages: debootstrap bookworm ($flavour) from $mirror (once per machine)" >&2
	debootstrap --variant=minbase --include="$pkgs" bookworm "$tree" "$mirror" >"$cache/debootstrap-$flavour.log" 2>&1 ||
		{ tail -20 "$cache/debootstrap-$flavour.log" >&2; return 1; }
	# Numeric owners and xattrs, so the tarball is the tree exactly.
	# Compressed as registries serve layers (gzip -6); without the
	# downloaded packages and package lists, as Debian's own images ship.
	tar --numeric-owner --xattrs --xattrs-include='*' -C "$tree" \
		--exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*_*' \
		-cf - . | gzip -6 -n >"$out.tmp"
	mv "$out.tmp" "$out"
	echo "$pkgs" >"$out.pkgs"
	rm -rf "$tree"
	trap - EXIT
	echo "$out"
}

flavours=("$@")
if ((${#flavours[@]} == 0)); then
	flavours=(minbase systemd)
	kernel
fi
for f in "${flavours[@]}"; do
	build "$f"
done
