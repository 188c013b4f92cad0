#!/usr/bin/env bash
# make run: the daemon up, a kernel and the development image in place,
# then a shell in the VM "dev" (created or started as needed), or ARGS
# run in it.
#
# The development image is a Debian bookworm machine (systemd as init,
# Docker, git, build-essential, curl, sudo) built here from Debian's
# mirror with debootstrap, online or not: no registry serves such an
# image. It is named as podman names local builds, localhost/NAME, and
# its tarball is cached once per machine.
set -euo pipefail

bin=${BIN:-bin}
cache=${BANGER_RUN_CACHE:-/var/cache/banger-run}
image=localhost/banger-dev:bookworm
banger() { "$bin/banger" "$@"; }

banger daemon status >/dev/null 2>&1 || banger daemon start

if ! banger kernel show default >/dev/null 2>&1; then
	echo "run: importing the distribution's kernel (once)" >&2
	banger kernel import --debian
fi

if ! banger image show "$image" >/dev/null 2>&1; then
	echo "run: building $image from Debian's mirror: systemd, Docker, git, build-essential (once per machine)" >&2
	tarball=$(BANGER_TEST_CACHE=$cache scripts/testimages.sh dev)
	# The tree as a one-layer image archive, imported, then dropped: the
	# tarball stays cached, this is made again from it in seconds.
	saved=$(mktemp "$cache/dev-image-XXXXXX.tar")
	trap 'rm -f "$saved"' EXIT
	.tools/crane append -f "$tarball" -t "$image" -o "$saved" 2>/dev/null
	banger image import "$saved" --name "$image"
	rm -f "$saved"
	trap - EXIT
fi

# The checkout itself is the VM's workspace (placed once, at /workspace,
# where the shell starts). ARGS, when given, is one command line for the
# guest's shell.
if [[ -n ${ARGS:-} ]]; then
	exec "$bin/banger" vm run "$PWD" --name dev --image "$image" -- "$ARGS"
fi
exec "$bin/banger" vm run "$PWD" --name dev --image "$image"
