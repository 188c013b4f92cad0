// Command bangerd is banger's daemon, the same program as `banger daemon
// run`: it owns all state and serves the API on a unix socket.
package main

import (
	"os"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	os.Exit(cli.DaemonMain(os.Args[1:]))
}
