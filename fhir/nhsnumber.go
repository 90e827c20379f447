package fhir

// NHSNumberSystem is the identifier system of an NHS number.
const NHSNumberSystem = "https://fhir.nhs.uk/Id/nhs-number"

// ODSOrganizationCodeSystem is the identifier system of an ODS organisation code.
const ODSOrganizationCodeSystem = "https://fhir.nhs.uk/Id/ods-organization-code"

// NHSNumberProblem says what is wrong with an NHS number, or "" when it is
// valid. A wrong NHS number routes a child's record to the wrong subscribers,
// so the check is strict: exactly ten ASCII digits whose tenth is the
// Modulus 11 check digit of the first nine (a remainder giving 10 means the
// number can never be valid).
func NHSNumberProblem(s string) string {
	if len(s) != 10 {
		return "must be exactly 10 digits"
	}
	sum := 0
	for i := 0; i < 10; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return "must be exactly 10 digits"
		}
		if i < 9 {
			sum += int(c-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	switch check {
	case 11:
		check = 0
	case 10:
		return "fails the Modulus 11 check (no valid check digit exists for the first nine digits)"
	}
	if int(s[9]-'0') != check {
		return "fails the Modulus 11 check digit"
	}
	return ""
}

// ValidNHSNumber reports whether s is a valid NHS number.
func ValidNHSNumber(s string) bool { return NHSNumberProblem(s) == "" }
