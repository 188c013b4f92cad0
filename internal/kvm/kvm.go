// Package kvm holds the host facts every VMM driver, the boot path and
// doctor share: whether KVM can run an ordinary guest kernel here, and the
// TSC rate an emulated guest is told.
package kvm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrNoKVM explains why KVM is not used.
var ErrNoKVM = errors.New("KVM is not usable")

// KVMUsable tells whether guests can run under KVM here. A PVM-only host
// (kvm_pvm loaded, no vmx/svm) has a /dev/kvm on which an ordinary kernel
// hangs: that counts as unusable.
func KVMUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoKVM, err)
	}
	f.Close()
	if PVMOnly() {
		return fmt.Errorf("%w: this host's KVM is PVM-only (kvm_pvm, no vmx/svm), which cannot run a standard guest kernel", ErrNoKVM)
	}
	return nil
}

// PVMOnly says whether the host's KVM is PVM alone (the kvm_pvm module,
// no hardware virtualization flags): it runs only PVM guest kernels.
func PVMOnly() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil && !hasVirtFlags()
}

func hasVirtFlags() bool {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "flags") {
			for _, fl := range strings.Fields(sc.Text()) {
				if fl == "vmx" || fl == "svm" {
					return true
				}
			}
			return false
		}
	}
	return false
}

// TSCkHz is the host's TSC frequency in kHz (from /proc/cpuinfo), passed
// to an emulated guest as tsc_early_khz: without it, a TCG guest under
// host load often hangs calibrating its TSC against the PIT.
func TSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}
