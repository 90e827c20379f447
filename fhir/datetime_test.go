package fhir

import (
	"fmt"
	"testing"
	"time"
)

// TestCalendarDayMatchesTime checks DateTimeProblem's day check against
// time.Parse, which it replaced, for every month and day field of years on
// each leap-year rule.
func TestCalendarDayMatchesTime(t *testing.T) {
	for _, y := range []int{1, 4, 100, 400, 1582, 1900, 2000, 2023, 2024, 2100, 9996, 9999} {
		for m := 1; m <= 12; m++ {
			for d := 0; d <= 39; d++ {
				v := fmt.Sprintf("%04d-%02d-%02d", y, m, d)
				_, err := time.Parse("2006-01-02", v)
				if got := DateTimeProblem(v, false) == ""; got != (err == nil) {
					t.Errorf("%s: valid %v, time.Parse error %v", v, got, err)
				}
			}
		}
	}
}
