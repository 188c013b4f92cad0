#!/bin/bash
# Runs E2B's own JS SDK test suite (e2b-dev/E2B packages/js-sdk/tests, at
# the commit below, with the SDK source of that commit) against a banger
# daemon's E2B API: a daemon on a temporary BANGER_HOME, Debian (the test
# image) as the template "base", one key. Writes vitest's JSON to
# $OUT.json and a table, test by test, to $OUT.md (OUT defaults to
# bin/e2b-suite). The E2B source comes from E2B_GIT (a git directory that
# has the commit, such as a clone) or, without it, a clone from GitHub.
# Not part of make test: it needs that source, and takes about half an
# hour under TCG. make e2b-suite runs it; SUITE_FILES (test files, e.g.
# tests/sandbox/snapshot.test.ts) runs those alone, and keeps the
# daemon's log as $OUT.daemon.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pin=b8029973aa7da5f741f7bb1a9f833b38a0885438 # packages/js-sdk 2.45.0
out=${OUT:-$root/bin/e2b-suite}
cache=${BANGER_TEST_CACHE:-/var/cache/banger-test}
work=$(mktemp -d /tmp/e2b-suite.XXXXXX)
export BANGER_HOME=$work/home
cleanup() {
	"$root/bin/banger" daemon stop >/dev/null 2>&1 || true
	[[ -n ${SUITE_FILES:-} ]] && cp "$BANGER_HOME"/logs/bangerd.log "$out.daemon.log" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

echo "e2b-suite: the SDK and its tests at ${pin:0:12}" >&2
if [[ -z ${E2B_GIT:-} ]]; then
	git clone -q --filter=blob:none --no-checkout https://github.com/e2b-dev/E2B "$work/e2b.git"
	E2B_GIT=$work/e2b.git/.git
fi
git --git-dir="$E2B_GIT" archive "$pin" packages/js-sdk | tar -x -C "$work"
mv "$work/packages/js-sdk" "$work/sdk"
cd "$work/sdk"
# The suite's own dependencies (vitest, msw and the SDK's), pinned by
# test/e2bsuite's lock file; its vitest config wants browsers and
# Cloudflare's runner, so the unit project alone is run, as it is
# configured there, with a longer timeout for emulation.
cp "$root/test/e2bsuite/package.json" "$root/test/e2bsuite/package-lock.json" .
npm ci --no-audit --no-fund --loglevel=error >/dev/null
cat >banger.vitest.config.mts <<'EOF'
import { defineConfig } from 'vitest/config'
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    exclude: ['tests/runtimes/**', 'tests/template/**', 'tests/connectionConfig.test.ts'],
    isolate: true,
    testTimeout: 180_000,
    hookTimeout: 180_000,
    maxWorkers: 2,
    environment: 'node',
    setupFiles: ['tests/globalFetchFallback.setup.ts'],
    env: process.env as Record<string, string>,
  },
})
EOF

echo "e2b-suite: a daemon on $BANGER_HOME" >&2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$BANGER_HOME"
printf '[e2b]\nlisten = "127.0.0.1:%s"\n' "$port" >"$BANGER_HOME/config.toml"
banger() { "$root/bin/banger" "$@"; }
banger daemon start >/dev/null
banger kernel import --deb "$(ls "$cache"/linux-image-*.deb | head -1)" >/dev/null
"$root/.tools/crane" append -f "$cache/debian-bookworm-minbase.tar.gz" -t e2b-suite/debian -o "$work/debian.tar" 2>/dev/null
banger image import "$work/debian.tar" --name debian >/dev/null
banger e2b template set base debian --memory 512M >/dev/null
key=$(banger e2b key create suite --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')

echo "e2b-suite: running the suite (E2B_API_URL=http://127.0.0.1:$port)" >&2
mkdir -p "$(dirname "$out")"
E2B_API_URL=http://127.0.0.1:$port E2B_SANDBOX_URL=http://127.0.0.1:$port E2B_API_KEY=$key \
	npx vitest run --config banger.vitest.config.mts --reporter=json --outputFile="$out.json" ${SUITE_FILES:-} >"$out.log" 2>&1 || true
node "$root/test/e2bsuite/table.mjs" "$out.json" >"$out.md"
tail -3 "$out.md" >&2
