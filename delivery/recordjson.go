package delivery

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecordJSON appends r as encoding/json marshals it, byte for byte,
// without reflection: the mailbox log writes a record per delivery and
// per acknowledgement, and json.Marshal's time.Time fields (MarshalJSON,
// then a re-scan of its output) were most of that cost. What it does not
// reproduce itself (a string needing escapes, a time outside RFC 3339, a
// latency that is not finite) falls back to encoding/json.
func appendRecordJSON(b []byte, r *Record) ([]byte, error) {
	start := len(b)
	b, ok := appendRecordFast(b, r)
	if ok {
		return b, nil
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return b[:start], err
	}
	return append(b[:start], raw...), nil
}

// recordEncoder carries the buffer through appendRecordFast; ok turns
// false at the first value it leaves to encoding/json.
type recordEncoder struct {
	b  []byte
	ok bool
}

func (e *recordEncoder) str(name, v string) {
	e.b = append(e.b, name...)
	e.b, e.ok = appendPlainString(e.b, v, e.ok)
}

func (e *recordEncoder) num(name string, v int) {
	e.b = append(e.b, name...)
	e.b = strconv.AppendInt(e.b, int64(v), 10)
}

func (e *recordEncoder) time(name string, t time.Time) {
	e.b = append(e.b, name...)
	e.b, e.ok = appendTime(e.b, t, e.ok)
}

func appendRecordFast(b []byte, r *Record) ([]byte, bool) {
	if cap(b)-len(b) < 512 {
		b = append(make([]byte, 0, len(b)+512+128*(len(r.Matches)+len(r.Attempts))), b...)
	}
	e := recordEncoder{b: b, ok: true}
	e.str(`{"id":`, r.ID)
	e.str(`,"eventId":`, r.EventID)
	e.str(`,"eventCode":`, r.EventCode)
	if r.NHSNumber != "" {
		e.str(`,"nhsNumber":`, r.NHSNumber)
	}
	e.str(`,"channel":`, r.Channel)
	e.str(`,"endpoint":`, r.Endpoint)
	e.b = append(e.b, `,"matches":`...)
	if r.Matches == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, m := range r.Matches {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.str(`{"subscription":`, m.Subscription)
			e.str(`,"kind":`, m.Kind)
			if m.Rule != "" {
				e.str(`,"rule":`, m.Rule)
			}
			if m.Organisation != "" {
				e.str(`,"organisation":`, m.Organisation)
			}
			if m.Tag != "" {
				e.str(`,"tag":`, m.Tag)
			}
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, ']')
	}
	e.str(`,"state":`, r.State)
	e.num(`,"generation":`, r.Generation)
	e.num(`,"attemptCount":`, r.AttemptCount)
	if !r.FirstAttempt.IsZero() {
		e.time(`,"firstAttempt":`, r.FirstAttempt)
	}
	if !r.NextAttempt.IsZero() {
		e.time(`,"nextAttempt":`, r.NextAttempt)
	}
	if r.LastStatus != 0 {
		e.num(`,"lastStatus":`, r.LastStatus)
	}
	if r.LastError != "" {
		e.str(`,"lastError":`, r.LastError)
	}
	if r.Reason != "" {
		e.str(`,"reason":`, r.Reason)
	}
	e.time(`,"created":`, r.Created)
	e.time(`,"updated":`, r.Updated)
	e.b = append(e.b, `,"attempts":`...)
	if r.Attempts == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, a := range r.Attempts {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.time(`{"at":`, a.At)
			e.num(`,"generation":`, a.Generation)
			if a.Status != 0 {
				e.num(`,"status":`, a.Status)
			}
			if a.Error != "" {
				e.str(`,"error":`, a.Error)
			}
			e.str(`,"outcome":`, a.Outcome)
			e.b = append(e.b, `,"latencyMs":`...)
			e.b, e.ok = appendFloat(e.b, a.LatencyMs, e.ok)
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, ']')
	}
	e.num(`,"totalAttempts":`, r.TotalAttempts)
	e.b = append(e.b, '}')
	return e.b, e.ok
}

// appendPlainString quotes s when no character of it needs an escape
// (encoding/json escapes controls, quote, backslash, <, >, &, invalid
// UTF-8, U+2028 and U+2029); otherwise it reports !ok.
func appendPlainString(b []byte, s string, ok bool) ([]byte, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return b, false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return b, false
		}
		i += size
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), ok
}

// appendTime is time.Time.MarshalJSON where it does not fail: a year
// within 0-9999 and a zone offset under 24 hours.
func appendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := t.Zone(); off <= -24*3600 || off >= 24*3600 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), ok
}

// appendFloat is encoding/json's float64 encoding of a finite f.
func appendFloat(b []byte, f float64, ok bool) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b) - start; n >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b, ok
}
