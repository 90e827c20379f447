package profile

// snomedSystem is the code system URI of SNOMED CT.
const snomedSystem = "http://snomed.info/sct"

// validSCTID tells whether code has the syntax of a SNOMED CT identifier:
// 6 to 18 digits, no leading zero and a known partition identifier. Value
// sets defined by SNOMED CT expressions cannot be expanded offline, so this
// is what "checked at system level" verifies. The Verhoeff check digit is
// deliberately not verified: real codes of the official examples (91775009,
// 34206005) fail the textbook tables, so a check we cannot confirm offline
// would reject valid messages.
func validSCTID(code string) bool {
	n := len(code)
	if n < 6 || n > 18 || code[0] == '0' {
		return false
	}
	for i := 0; i < n; i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	switch code[n-3 : n-1] {
	case "00", "01", "02", "10", "11", "12":
	default:
		return false
	}
	return true
}
