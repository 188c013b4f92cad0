#!/usr/bin/env bash
# make run: the daemon up, a kernel and the default image in place, then a
# shell in the VM "dev" (created or started as needed), or ARGS run in it.
# Offline, the default image is built from the distribution's mirror
# (debootstrap) and imported under the default image's name.
set -euo pipefail

bin=${BIN:-bin}
cache=${BANGER_RUN_CACHE:-/var/cache/banger-run}
banger() { "$bin/banger" "$@"; }

banger daemon status >/dev/null 2>&1 || banger daemon start

if ! banger kernel show default >/dev/null 2>&1; then
	echo "run: importing the distribution's kernel (once)" >&2
	banger kernel import --debian
fi

image=$(banger config show | awk '$1 == "default_image_name" { print $2 }')
if ! banger image show "$image" >/dev/null 2>&1; then
	if ! timeout 300 "$bin/banger" image pull "$image"; then
		echo "run: cannot pull $image (no internet?): building a Debian image from the distribution's mirror instead" >&2
		tarball=$(BANGER_TEST_CACHE=$cache scripts/testimages.sh)
		saved=$cache/default-image.tar
		.tools/crane append -f "$tarball" -t "$image" -o "$saved.tmp" 2>/dev/null
		mv "$saved.tmp" "$saved"
		banger image import "$saved" --name "$image"
	fi
fi

# The checkout itself is the VM's workspace (placed once, at /workspace,
# where the shell starts). ARGS, when given, is one command line for the
# guest's shell.
if [[ -n ${ARGS:-} ]]; then
	exec "$bin/banger" vm run "$PWD" --name dev -- "$ARGS"
fi
exec "$bin/banger" vm run "$PWD" --name dev
