// Package version describes the running binary: banger's release version
// (a constant bumped at release) plus the commit and date the Go toolchain
// stamps into every build made from a git checkout.
package version

import (
	"runtime"
	"runtime/debug"

	"github.com/bangerdev/banger/api"
)

// Version is banger's release version: this, or what `make release`
// stamps (-X github.com/bangerdev/banger/internal/version.Version=...);
// like buildDate, never written at run time.
var Version = "0.1.0-dev"

// buildDate is stamped by the linker (`make build` passes
// -X github.com/bangerdev/banger/internal/version.buildDate=...); it is
// never written at run time.
var buildDate string

// Info returns the build description of the running binary.
func Info() api.BuildInfo {
	info := api.BuildInfo{Version: Version, Date: buildDate, Go: runtime.Version(), Protocol: api.ProtocolVersion}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
			if len(info.Commit) > 12 {
				info.Commit = info.Commit[:12]
			}
		case "vcs.time":
			if info.Date == "" { // a plain `go build`: the commit's date is the best we know
				info.Date = s.Value
			}
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}
