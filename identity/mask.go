package identity

import (
	"fmt"
	"log/slog"
	"strings"
)

// MaskNHSNumbers is a slog ReplaceAttr that masks every NHS number in
// string values (and in errors and Stringers logged as values), keeping
// the last three digits: enough to tell two patients apart in a support
// conversation, not enough to identify one. A ten-digit run standing alone,
// or written 3-3-4 with spaces or hyphens, is treated as an NHS number;
// longer runs (ASIDs, 12 digits) are left alone.
func MaskNHSNumbers(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); hasDigitRun(s) {
			a.Value = slog.StringValue(MaskNHS(s))
		}
	case slog.KindInt64, slog.KindUint64:
		// A number is only taken for an NHS number when its key says so:
		// ten-digit integers are also Unix times.
		if strings.Contains(strings.ToLower(a.Key), "nhs") {
			a.Value = slog.StringValue(MaskNHS(a.Value.String()))
		}
	case slog.KindAny:
		var s string
		switch v := a.Value.Any().(type) {
		case error:
			s = v.Error()
		case fmt.Stringer:
			s = v.String()
		default:
			return a
		}
		if hasDigitRun(s) {
			a.Value = slog.StringValue(MaskNHS(s))
		}
	}
	return a
}

// hasDigitRun is a cheap pre-check: at least ten digits somewhere.
func hasDigitRun(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			if n++; n >= 10 {
				return true
			}
		}
	}
	return false
}

// MaskNHS replaces the first seven digits of every NHS-number-shaped run in
// s with '*'.
func MaskNHS(s string) string {
	b := []byte(s)
	for i := 0; i < len(b); {
		if b[i] < '0' || b[i] > '9' || (i > 0 && isWordByte(b[i-1])) {
			i++
			continue
		}
		end, digits := nhsRun(b, i)
		if end < 0 {
			i++
			continue
		}
		masked := 0
		for j := i; j < end && masked < 7; j++ {
			if b[j] >= '0' && b[j] <= '9' {
				b[j] = '*'
				masked++
			}
		}
		_ = digits
		i = end
	}
	return string(b)
}

// nhsRun matches ten digits at i, contiguous or grouped 3-3-4 by one space
// or hyphen, not followed by a word character. It returns the end offset
// or -1.
func nhsRun(b []byte, i int) (int, int) {
	digit := func(j int) bool { return j < len(b) && b[j] >= '0' && b[j] <= '9' }
	end := func(j int) bool { return j >= len(b) || !isWordByte(b[j]) }
	j := i
	for j < len(b) && digit(j) {
		j++
	}
	if j-i == 10 && end(j) {
		return j, 10
	}
	// 3-3-4 grouping: "943 476 5919" or "943-476-5919".
	if j-i == 3 && j+8 < len(b)+0 && (b[j] == ' ' || b[j] == '-') {
		sep := b[j]
		k := j + 1
		if digit(k) && digit(k+1) && digit(k+2) && k+3 < len(b) && b[k+3] == sep &&
			digit(k+4) && digit(k+5) && digit(k+6) && digit(k+7) && end(k+8) {
			return k + 8, 10
		}
	}
	return -1, 0
}
