package main

import "syscall"

func madviseDontNeed(addr, length uintptr) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, length, syscall.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
