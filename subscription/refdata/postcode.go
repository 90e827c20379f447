package refdata

import "strings"

// NormalisePostcode returns the compact key form of a UK postcode ("LS177DF"
// for "ls17 7df", "LS17 7DF" or the padded pcd7/pcd8 forms) and whether it
// has the shape of one: an outward code of 2 to 4 letters and digits
// starting with a letter, and an inward code of a digit and two letters.
// The shape is checked loosely on purpose: the ONS files hold a few
// non-geographic postcodes ("GIR 0AA") that a strict grammar would refuse.
func NormalisePostcode(s string) (string, bool) {
	var b [8]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			continue
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			return "", false
		}
		if n == len(b) {
			return "", false
		}
		b[n] = c
		n++
	}
	if n < 5 || n > 7 {
		return "", false
	}
	in := b[n-3 : n]
	if !isDigit(in[0]) || !isLetter(in[1]) || !isLetter(in[2]) || !isLetter(b[0]) {
		return "", false
	}
	return string(b[:n]), true
}

// DisplayPostcode turns a compact key back into the usual "LS17 7DF" form.
func DisplayPostcode(key string) string {
	if len(key) < 5 {
		return key
	}
	return key[:len(key)-3] + " " + key[len(key)-3:]
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' }

// isGSS reports whether s is a 9-character ONS GSS code (E38000123): a
// letter then eight digits. ONS pseudo codes (E99999999, L99999999) pass.
func isGSS(s string) bool {
	if len(s) != 9 || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < 9; i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// isODS reports whether s looks like an ODS organisation code: 3 to 8
// upper-case letters and digits (sub-ICB "00K", practice "B86056").
func isODS(s string) bool {
	if len(s) < 3 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && !isLetter(s[i]) {
			return false
		}
	}
	return true
}

// trimField drops the surrounding spaces ONS and ODS files pad some fields
// with, without allocating.
func trimField(s string) string { return strings.TrimSpace(s) }
