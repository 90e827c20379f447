//go:build !linux

package main

import "os"

// isTerminal reports whether w is a terminal. Without the terminal ioctl a
// character device is taken for one; /dev/null then counts too, which costs
// a progress line nobody sees, or a prompt that reads end of file and
// cancels.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
