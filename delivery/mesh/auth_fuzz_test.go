package mesh

import (
	"strings"
	"testing"
	"time"
)

// FuzzCheck feeds arbitrary Authorization headers to the NHSMESH parser: it
// must never panic, and must accept only what the HMAC proves.
func FuzzCheck(f *testing.F) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	f.Add(Token("k", "MB1", "pw", "n", 1, now))
	f.Add("NHSMESH MB1:n:1:202611221000:00")
	f.Add("NHSMESH ::::")
	f.Add("NHSMESH MB1:n:-1:2026:zz")
	f.Fuzz(func(t *testing.T, header string) {
		a := NewAuthenticator(AuthOptions{SharedKey: "k", Passwords: map[string]string{"MB1": "pw"}, Now: func() time.Time { return now }})
		err := a.Check(header, "MB1")
		if err != nil {
			return
		}
		parts := strings.Split(strings.TrimPrefix(header, "NHSMESH "), ":")
		at, _ := time.Parse("200601021504", parts[3])
		count := 0
		for _, c := range parts[2] {
			count = count*10 + int(c-'0')
		}
		if want := Token("k", "MB1", "pw", parts[1], count, at); !strings.EqualFold(want, header) && parts[2] == strings.TrimLeft(parts[2], "0") {
			t.Fatalf("accepted a header it did not issue: %q (want %q)", header, want)
		}
	})
}
