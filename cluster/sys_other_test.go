//go:build !linux

package cluster

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

func sysProcAttrAs(cred *syscall.Credential) *syscall.SysProcAttr {
	if cred == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: cred}
}
