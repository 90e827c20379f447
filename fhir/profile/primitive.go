package profile

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// primitiveProblem checks the lexical form of a primitive value of type
// code and says what is wrong, or "" when it is valid. The rules are the
// STU3 regular expressions (anchored) plus the ones FHIR states in prose:
// instant needs seconds and a zone, dates must exist, offsets lie within
// ±14:00 (publish.md §4.5).
func primitiveProblem(code, v string) string {
	if v == "" {
		return "a primitive value must not be empty"
	}
	switch code {
	case "boolean":
		if v != "true" && v != "false" {
			return "must be true or false"
		}
	case "integer", "positiveInt", "unsignedInt":
		if !isInteger(v) {
			return "is not an integer"
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return "is out of the 32-bit integer range"
		}
		if code == "positiveInt" && n < 1 {
			return "must be 1 or more"
		}
		if code == "unsignedInt" && n < 0 {
			return "must be 0 or more"
		}
	case "decimal":
		if !isDecimal(v) {
			return "is not a decimal"
		}
	case "date":
		if len(v) > 10 {
			return "a date carries no time"
		}
		return fhir.DateTimeProblem(v, false)
	case "dateTime":
		return fhir.DateTimeProblem(v, false)
	case "instant":
		return fhir.DateTimeProblem(v, true)
	case "time":
		return timeProblem(v)
	case "uri":
		if hasWhitespace(v) {
			return "a uri contains no whitespace"
		}
	case "id":
		if len(v) > 64 {
			return "an id has at most 64 characters"
		}
		for i := 0; i < len(v); i++ {
			c := v[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return "an id has only letters, digits, '-' and '.'"
			}
		}
	case "code":
		if !plainCode(v) && (strings.TrimSpace(v) != v || strings.Contains(v, "  ") || strings.ContainsAny(v, "\t\r\n")) {
			return "a code has no leading, trailing or repeated whitespace"
		}
	case "oid":
		if !isOID(v) {
			return "is not an oid (urn:oid:n.n...)"
		}
	case "uuid":
		if !isUUID(v) {
			return "is not a uuid (urn:uuid: and 8-4-4-4-12 lower-case hex)"
		}
	case "base64Binary":
		s := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, v)
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			return "is not base64"
		}
	case "string", "markdown":
		if strings.TrimSpace(v) == "" {
			return "a string must have non-whitespace content"
		}
	}
	return ""
}

// hasWhitespace is strings.ContainsAny(v, " \t\r\n") without building a
// character set per call.
func hasWhitespace(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' && (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			return true
		}
	}
	return false
}

// plainCode is a quick sufficient test that a code passes the whitespace
// rule: ASCII without control characters, not starting or ending with a
// space, no two spaces in a row. Anything else gets the exact test.
func plainCode(v string) bool {
	if v == "" || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < ' ' || c >= 0x7f || c == ' ' && v[i-1] == ' ' {
			return false
		}
	}
	return true
}

func isInteger(v string) bool {
	s := strings.TrimPrefix(v, "-")
	if s == "" || len(s) > 1 && s[0] == '0' {
		return false
	}
	return digitsOnly(s)
}

func digitsOnly(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isDecimal follows -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isDecimal(v string) bool {
	s := strings.TrimPrefix(v, "-")
	mant, exp, hasExp := strings.Cut(strings.ReplaceAll(s, "E", "e"), "e")
	if hasExp && !digitsOnly(strings.TrimLeft(exp, "+-")) || hasExp && len(exp)-len(strings.TrimLeft(exp, "+-")) > 1 {
		return false
	}
	ip, fp, hasFrac := strings.Cut(mant, ".")
	if !digitsOnly(ip) || len(ip) > 1 && ip[0] == '0' {
		return false
	}
	return !hasFrac || digitsOnly(fp)
}

func timeProblem(v string) string {
	if len(v) < 8 || v[2] != ':' || v[5] != ':' || !digitsOnly(v[:2]) || !digitsOnly(v[3:5]) || !digitsOnly(v[6:8]) {
		return "a time is hh:mm:ss"
	}
	if v[:2] > "23" || v[3:5] > "59" || v[6:8] > "59" {
		return "time out of range"
	}
	if len(v) > 8 && (v[8] != '.' || !digitsOnly(v[9:])) {
		return "a time is hh:mm:ss with an optional fraction"
	}
	return ""
}

func isOID(v string) bool {
	s, ok := strings.CutPrefix(v, "urn:oid:")
	if !ok {
		return false
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts[0]) != 1 || parts[0] > "2" {
		return false
	}
	for _, p := range parts {
		if !digitsOnly(p) || len(p) > 1 && p[0] == '0' {
			return false
		}
	}
	return true
}

func isUUID(v string) bool {
	s, ok := strings.CutPrefix(v, "urn:uuid:")
	if !ok || len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
