package fhir

// DateTimeProblem checks a FHIR date, dateTime or instant lexical value and
// says what is wrong with it, or "" when it is valid. It follows the regular
// expression of publish.md §4.5 (the FHIR one with its offset bug fixed): a
// value with a time part must carry a zone offset, and the offset must lie in
// -14:00..+14:00. instant requires the full precision down to seconds.
func DateTimeProblem(v string, instant bool) string {
	n := len(v)
	digits := func(from, to int) bool {
		for i := from; i < to; i++ {
			if v[i] < '0' || v[i] > '9' {
				return false
			}
		}
		return true
	}
	if n < 4 || !digits(0, 4) || v[:4] == "0000" {
		return "must start with a four-digit year 0001-9999"
	}
	if n == 4 {
		if instant {
			return "an instant needs a full date, time and zone offset"
		}
		return ""
	}
	if n < 7 || v[4] != '-' || !digits(5, 7) || v[5:7] < "01" || v[5:7] > "12" {
		return "month must be -01 to -12"
	}
	if n == 7 {
		if instant {
			return "an instant needs a full date, time and zone offset"
		}
		return ""
	}
	if n < 10 || v[7] != '-' || !digits(8, 10) {
		return "day must be two digits"
	}
	if !calendarDay(v[:4], v[5:7], v[8:10]) {
		return "is not a calendar date"
	}
	if n == 10 {
		if instant {
			return "an instant needs a time and zone offset"
		}
		return ""
	}
	if v[10] != 'T' {
		return "date and time must be separated by T"
	}
	if n < 19 || !digits(11, 13) || v[13] != ':' || !digits(14, 16) || v[16] != ':' || !digits(17, 19) {
		return "time must be hh:mm:ss"
	}
	if v[11:13] > "23" || v[14:16] > "59" || v[17:19] > "60" {
		return "time out of range"
	}
	i := 19
	if i < n && v[i] == '.' {
		j := i + 1
		for j < n && v[j] >= '0' && v[j] <= '9' {
			j++
		}
		if j == i+1 {
			return "fraction of a second needs digits after the point"
		}
		i = j
	}
	if i == n {
		return "a time must carry a zone offset (Z or ±hh:mm)"
	}
	switch rest := v[i:]; {
	case rest == "Z":
		return ""
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' && digits(i+1, i+3) && digits(i+4, i+6):
		hh, mm := rest[1:3], rest[4:6]
		if hh > "14" || (hh == "14" && mm != "00") || mm > "59" {
			return "zone offset " + rest + " is out of range (-14:00 to +14:00)"
		}
		return ""
	default:
		return "zone offset must be Z or ±hh:mm"
	}
}

// calendarDay reports whether the two-digit day exists in the month (01-12)
// of the four-digit year (0001-9999), in the proleptic Gregorian calendar,
// as time.Parse("2006-01-02") decides (without its allocations: it runs on
// every date of every published bundle).
func calendarDay(year, month, day string) bool {
	y := int(year[0]-'0')*1000 + int(year[1]-'0')*100 + int(year[2]-'0')*10 + int(year[3]-'0')
	m := int(month[0]-'0')*10 + int(month[1]-'0')
	d := int(day[0]-'0')*10 + int(day[1]-'0')
	days := [13]int{0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[m]
	if m == 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		days = 29
	}
	return d >= 1 && d <= days
}
