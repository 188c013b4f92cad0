// Command banger is the CLI of banger: fresh, isolated microVMs from any OCI
// image. It talks to the bangerd daemon; `banger daemon run` is the daemon.
package main

import (
	"os"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
