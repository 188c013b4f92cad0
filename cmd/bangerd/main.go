// Command bangerd is banger's daemon, the same program as `banger daemon
// run`: it owns all state and serves the API on a unix socket. It also
// runs what the banger CLI hands over to it (the root helper, install,
// update), named "banger" then.
package main

import (
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/bangerd"
)

func main() {
	os.Exit(bangerd.Main(filepath.Base(os.Args[0]), os.Args[1:]))
}
