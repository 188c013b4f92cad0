#!/usr/bin/env bash
# Runs the benchmarks and prints, for every benchmark with a "baseline"
# sub-benchmark, each sibling's time as a ratio of that baseline measured
# in the same run on the same machine.
set -euo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench "${BENCH:-.}" -benchmem -count "${COUNT:-1}" ./... | tee "$out"
echo
echo "ratios against the baseline of the same run:"
awk '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		n = split(name, parts, "/")
		if (n < 2) next
		group = substr(name, 1, length(name) - length(parts[n]) - 1)
		for (i = 1; i < NF; i++) if ($(i+1) == "ns/op") ns = $i
		if (parts[n] == "baseline") base[group] = ns
		else { order[++count] = name; groupOf[name] = group; val[name] = ns }
	}
	END {
		for (i = 1; i <= count; i++) {
			name = order[i]; g = groupOf[name]
			if (g in base && base[g] > 0)
				printf "  %-40s %12.0f ns/op  %6.2fx baseline (%.0f ns/op)\n", name, val[name], val[name] / base[g], base[g]
		}
	}' "$out"
