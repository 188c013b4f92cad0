//go:build linux

package guest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// listenVsock listens on the agent's vsock port, for VMMs that reach the
// agent through vsock (Firecracker, QEMU with vhost-vsock). It fails
// where the guest has no vsock transport.
func listenVsock(port uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening a vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listening on vsock port %d: %w", port, err)
	}
	return fd, nil
}

// acceptVsock yields each connection to the listener as a file.
func acceptVsock(fd int, serve func(*os.File)) {
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			fmt.Fprintf(os.Stderr, "banger-agent: vsock accept: %v\n", err)
			return
		}
		go serve(os.NewFile(uintptr(c), "vsock"))
	}
}
