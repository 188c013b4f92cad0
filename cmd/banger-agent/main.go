// Command banger-agent is the guest agent: PID 1 of every banger VM,
// carried in the initramfs banger builds for each kernel.
package main

import "github.com/bangerdev/banger/internal/agent/guest"

func main() { guest.Main() }
