//go:build !linux

package main

import "errors"

func madviseDontNeed(addr, length uintptr) error {
	return errors.New("not supported on this platform")
}
