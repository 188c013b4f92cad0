// Command banger-agent is the guest agent: PID 1 of every banger VM,
// carried in the initramfs banger builds for each kernel. Run as any
// other process in a guest (it stays reachable as /proc/1/exe), it is a
// small diagnostic tool.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/bangerdev/banger/internal/agent/guest"
)

func main() {
	if os.Getpid() == 1 {
		guest.Main()
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
