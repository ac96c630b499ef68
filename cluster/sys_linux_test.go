//go:build linux

package cluster

import "syscall"

// sysProcAttr makes the kernel SIGKILL a child (mariadbd, a server) when
// the test binary dies, even if it dies before its cleanups run (a panic,
// go test's -timeout), so CI never leaks processes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
