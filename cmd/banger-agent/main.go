// Command banger-agent is the guest agent: PID 1 of every banger VM,
// carried in the initramfs banger builds for each kernel, or, in a VM
// run by its image's init, that init's service (`banger-agent serve`)
// and the last step of its power-off (as /run/initramfs/shutdown). Run
// as any other process in a guest (it stays reachable as /proc/1/exe),
// it is a small diagnostic tool.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/bangerdev/banger/internal/agent/guest"
)

func main() {
	switch {
	case os.Getpid() == 1 && filepath.Base(os.Args[0]) == "shutdown":
		// systemd's shutdown handing back PID 1 (an image-init VM).
		verb := "poweroff"
		if len(os.Args) > 1 {
			verb = os.Args[1]
		}
		guest.Final(verb)
	case os.Getpid() == 1:
		guest.Main()
	case len(os.Args) == 2 && os.Args[1] == "serve":
		// The agent as a service of the image's init.
		if err := guest.Service(); err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: %v\n", err)
			os.Exit(1)
		}
	}
	if len(os.Args) < 2 || os.Args[1] != "vsock-ping" {
		fmt.Fprintln(os.Stderr, "banger-agent runs as PID 1 of a banger VM; as a command it has one use:\n  banger-agent vsock-ping [CID]   ping the agent over vsock (default CID 1, this guest)")
		os.Exit(2)
	}
	cid := uint64(1)
	if len(os.Args) > 2 {
		var err error
		if cid, err = strconv.ParseUint(os.Args[2], 10, 32); err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: bad CID %q: %v\n", os.Args[2], err)
			os.Exit(2)
		}
	}
	if err := guest.VsockPing(uint32(cid)); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: %v\n", err)
		os.Exit(1)
	}
}
