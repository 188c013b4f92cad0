package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

// The examples run against a real daemon on a temporary BANGER_HOME
// (main_test.go starts it), found the way a program finds the user's.

// Example connects to the daemon banger's CLI would use and checks that
// it speaks this client's protocol.
func Example() {
	sock, err := client.DefaultSocket()
	if err != nil {
		fmt.Println(err)
		return
	}
	c := client.New(sock, "my-tool/1.0")
	v, err := c.Version(context.Background())
	if err != nil {
		fmt.Println(err) // client.ErrDaemonNotRunning: `banger daemon start`
		return
	}
	fmt.Println("same protocol:", v.Daemon.Protocol == api.ProtocolVersion)
	// Output: same protocol: true
}

// ExampleClient_VM shows a daemon's error matched with the api sentinel
// it wraps, across the socket.
func ExampleClient_VM() {
	sock, _ := client.DefaultSocket()
	c := client.New(sock, "my-tool/1.0")
	_, err := c.VM(context.Background(), "no-such-vm")
	fmt.Println("not found:", errors.Is(err, api.ErrNotFound))
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		fmt.Println("code:", apiErr.Code)
	}
	// Output:
	// not found: true
	// code: not_found
}

// ExampleClient_VMs lists the VMs, as `banger ps` does.
func ExampleClient_VMs() {
	sock, _ := client.DefaultSocket()
	c := client.New(sock, "my-tool/1.0")
	vms, err := c.VMs(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range vms {
		fmt.Println(v.Name, v.State, v.IP)
	}
	fmt.Println(len(vms), "VMs")
	// Output: 0 VMs
}

// ExampleClient_CreateVM creates a VM, waits for it, runs a command in it
// and deletes it. It needs a kernel and an image (`banger kernel import
// --debian`, an image that can be pulled), so it is compiled, not run,
// by the tests; test/smoke does the same through the CLI.
func ExampleClient_CreateVM() {
	ctx := context.Background()
	sock, _ := client.DefaultSocket()
	c := client.New(sock, "my-tool/1.0")
	op, err := c.CreateVM(ctx, api.VMCreateParams{Name: "job-1", Image: "debian:bookworm"})
	if err != nil {
		fmt.Println(err) // api.ErrAlreadyExists, api.ErrInvalidArgument: at once
		return
	}
	op, err = c.WaitOperation(ctx, op.ID, func(s api.OperationSummary) { fmt.Println(s.Phase) })
	if err != nil || op.State != api.OpStateSucceeded {
		fmt.Println("create:", err, op.Error)
		return
	}
	res, err := c.ExecVM(ctx, api.VMExecParams{Name: op.Result, Args: []string{"uname", "-r"}},
		func(e api.VMExecEvent) error { _, err := os.Stdout.Write(e.Data); return err })
	fmt.Println("exit code:", res.ExitCode, err)
	_, _ = c.DeleteVM(ctx, api.VMDeleteParams{Name: op.Result, Force: true})
}
