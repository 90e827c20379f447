package fhir

import "testing"

func TestNHSNumberProblem(t *testing.T) {
	tests := []struct {
		in    string
		valid bool
	}{
		{"9912003888", true},
		{"9434765919", true},
		{"2686033207", true},
		{"0766140741", true},
		{"1112223330", false}, // BirthNotificationWithMother.xml: fails Mod-11
		{"6101231234", false}, // death notification examples: fails Mod-11
		{"9434765922", false}, // the NEMS RI accepts it; we do not
		{"991200388", false},
		{"99120038888", false},
		{"991200388a", false},
		{"991 200 3888", false},
		{"", false},
		{"1500000000", true},  // remainder 0 → check digit 0
		{"0000000000", true},  // all zero sums to 0 → check 0
		{"1234567890", false}, // remainder gives 10: never valid
	}
	for _, tt := range tests {
		if got := NHSNumberProblem(tt.in) == ""; got != tt.valid {
			t.Errorf("NHSNumberProblem(%q) valid = %v, want %v (%q)", tt.in, got, tt.valid, NHSNumberProblem(tt.in))
		}
	}
}

func FuzzNHSNumber(f *testing.F) {
	for _, s := range []string{"9912003888", "1112223330", "", "0000000000", "123456789x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		valid := ValidNHSNumber(s)
		// Independent restatement of the rule: ten digits, weighted sum of
		// the first nine plus the tenth is divisible by 11 with no digit-10.
		want := len(s) == 10
		sum := 0
		for i := 0; want && i < 10; i++ {
			if s[i] < '0' || s[i] > '9' {
				want = false
				break
			}
			if i < 9 {
				sum += int(s[i]-'0') * (10 - i)
			}
		}
		if want {
			c := (11 - sum%11) % 11
			want = c != 10 && int(s[9]-'0') == c
		}
		if valid != want {
			t.Fatalf("ValidNHSNumber(%q) = %v, want %v", s, valid, want)
		}
	})
}

func TestDateTimeProblem(t *testing.T) {
	tests := []struct {
		in      string
		instant bool
		valid   bool
	}{
		{"2017", false, true},
		{"2017-10", false, true},
		{"2017-10-02", false, true},
		{"2017-10-02T12:00:00+00:00", false, true},
		{"2017-10-02T12:00:00Z", false, true},
		{"2017-10-02T12:00:00.123+01:00", false, true},
		{"2017-10-02T12:00:00-14:00", false, true},
		{"2017-10-02T12:00:00+14:00", false, true},
		{"2017-10-02T12:00:00+14:01", false, false},
		{"2017-10-02T12:00:00+58:00", false, false}, // nipe-outcome-1-update.xml
		{"2017-10-02T12:00:00", false, false},       // no offset
		{"2017-10-02T12:00+00:00", false, false},
		{"2017-02-30", false, false},
		{"2017-13", false, false},
		{"0000", false, false},
		{"17-10-02", false, false},
		{"2017-10-02T25:00:00Z", false, false},
		{"2017-10-02T12:00:00.Z", false, false},
		{"2017-10-02", true, false},
		{"2017-10-02T12:00:00Z", true, true},
	}
	for _, tt := range tests {
		if got := DateTimeProblem(tt.in, tt.instant) == ""; got != tt.valid {
			t.Errorf("DateTimeProblem(%q, instant=%v) valid = %v, want %v (%q)", tt.in, tt.instant, got, tt.valid, DateTimeProblem(tt.in, tt.instant))
		}
	}
}

func TestEventSubject(t *testing.T) {
	s := EventSubject("vaccinations-1", "9912003888")
	if s != "ems.events.vaccinations-1.9912003888" {
		t.Fatalf("subject = %q", s)
	}
	code, nhs, ok := ParseEventSubject(s)
	if !ok || code != "vaccinations-1" || nhs != "9912003888" {
		t.Fatalf("parse = %q %q %v", code, nhs, ok)
	}
	code, nhs, ok = ParseEventSubject(EventSubject("pds-birth-notification-1", ""))
	if !ok || code != "pds-birth-notification-1" || nhs != "" {
		t.Fatalf("parse no-NHS = %q %q %v", code, nhs, ok)
	}
	for _, bad := range []string{"ems.events.x", "other.x.y", "ems.events..1", "ems.events.a.b.c"} {
		if _, _, ok := ParseEventSubject(bad); ok {
			t.Errorf("ParseEventSubject(%q) ok", bad)
		}
	}
}
