#!/usr/bin/env bash
# Installs what running banger needs (`scripts/deps.sh run`, for make
# run) or what building and testing it needs (no argument: all of it),
# and nothing that is already there: safe to run on every `make`. Needs
# root (or sudo) only when a Debian package is missing.
set -euo pipefail
mode=${1:-test}

# Debian packages, by the command (or file) that proves each is present.
# What running needs:
declare -A packages=(
	[git]=git                            # workspaces: the host tree's files
	[make]=make
	[e2fsck]=e2fsprogs                   # work disks: made, checked, grown
	[debootstrap]=debootstrap            # make run's development image
	[xz]=xz-utils                        # unpacks kernels (their xz uses the x86 BCJ filter)
	[qemu-system-x86_64]=qemu-system-x86 # the VMM
	[passt]=passt                        # user-mode networking with NAT (QEMU's own maps the host's loopback into the guest)
	[depmod]=kmod                        # indexes a kernel's modules for the guests' modprobe
)
# And what the tests and benchmarks need besides:
if [[ $mode != run ]]; then
	packages+=(
		[ip]=iproute2                 # tests make namespaces and veths
		[mount]=mount                 # tests loop-mount built images to compare them
		[/bin/busybox]=busybox-static # the smoke suite's small images
		[mkfs.ext4]=e2fsprogs         # the image benchmark's baseline
		[cpio]=cpio                   # tests read back the initramfs archives banger writes
		[dpkg-deb]=dpkg               # tests build .deb packages
		[nft]=nftables                # the network tests read the firewall as nft shows it
		[node]=nodejs                 # the real clients (MCP, E2B) the smoke suite drives banger with
		[npm]=npm
	)
fi

# `banger kernel import --debian` (and its smoke scenario) asks apt for the
# distribution's kernel package: apt needs its package lists.
need_lists=0
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || need_lists=1

missing=()
for cmd in "${!packages[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -e $cmd ]]; then
		missing+=("${packages[$cmd]}")
	fi
done

if ((${#missing[@]} || need_lists)); then
	sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || { echo "deps: need root to install ${missing[*]:-apt package lists}" >&2; exit 1; }
		sudo=(sudo)
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	if ((${#missing[@]})); then
		echo "deps: installing ${missing[*]}" >&2
		"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
fi

# Go: the toolchain named in go.mod, fetched through the module proxy by
# any Go >= 1.21 (GOTOOLCHAIN=auto). Debian 12's own Go is too old.
if ! command -v go >/dev/null 2>&1; then
	echo "deps: no Go toolchain on PATH; install Go >= 1.21 (https://go.dev/dl) or put /usr/local/go/bin on PATH" >&2
	exit 1
fi
go mod download

# Tools, built from the module proxy into .tools/ (once): crane makes
# make run's image archive; the CNCF registry is the tests'.
tools=$(cd "$(dirname "$0")/.." && pwd)/.tools
install_tool() { # name module@version
	[[ -x $tools/$1 ]] && return
	echo "deps: building $1 ($2)" >&2
	GOBIN=$tools go install "$2"
}
install_tool crane github.com/google/go-containerregistry/cmd/crane@v0.22.1
[[ $mode == run ]] || install_tool registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2

# The real clients of the smoke suite (the MCP Inspector's CLI and TypeScript
# SDK, the E2B JS SDK), from the npm registry at the versions test/clients pins:
# installed again only when its lock file changes.
if [[ $mode != run ]]; then
	clients=$(cd "$(dirname "$0")/.." && pwd)/test/clients
	if ! cmp -s "$clients/package-lock.json" "$tools/node/package-lock.json" || [[ ! -d $tools/node/node_modules ]]; then
		echo "deps: installing the test clients (npm ci in .tools/node)" >&2
		rm -rf "$tools/node"
		mkdir -p "$tools/node"
		cp "$clients/package.json" "$clients/package-lock.json" "$tools/node/"
		npm ci --prefix "$tools/node" --no-audit --no-fund --loglevel=error >/dev/null
	fi
fi
