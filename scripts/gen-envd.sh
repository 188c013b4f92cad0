#!/bin/bash
# Regenerates the Go code of E2B's envd protocol (internal/e2b/envd/*pb)
# from its .proto files: protoc (Debian's protobuf-compiler), with
# protoc-gen-go and protoc-gen-connect-go at the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || apt-get install -y protobuf-compiler
bin=$PWD/.tools/protoc-gen
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go
GOBIN=$bin go install connectrpc.com/connect/cmd/protoc-gen-connect-go
for p in process filesystem; do
	PATH=$bin:$PATH protoc -I internal/e2b/envd/${p}pb \
		--go_out=internal/e2b/envd/${p}pb --go_opt=paths=source_relative \
		--connect-go_out=internal/e2b/envd/${p}pb --connect-go_opt=paths=source_relative,package_suffix= \
		$p.proto
done
