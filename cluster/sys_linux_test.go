//go:build linux

package cluster

import "syscall"

// sysProcAttr makes the kernel SIGKILL a child (mariadbd, a server) when
// the test binary dies, even if it dies before its cleanups run (a panic,
// go test's -timeout), so CI never leaks processes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// sysProcAttrAs is sysProcAttr for a child that runs as user cred (nil:
// as this process). The child is started as that user rather than
// switching itself (mariadbd --user), since a switch of user clears the
// parent-death signal; Go sets it after the switch.
func sysProcAttrAs(cred *syscall.Credential) *syscall.SysProcAttr {
	a := sysProcAttr()
	a.Credential = cred
	return a
}
