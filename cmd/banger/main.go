// Command banger is the CLI of banger: fresh, isolated microVMs from any OCI
// image. It talks to the bangerd daemon, and hands `daemon run`, `system`
// and `update` over to the bangerd binary beside it.
package main

import (
	"os"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
