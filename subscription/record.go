package subscription

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Primary record encodings, told apart by their first byte.
//
// Schema 1 stored JSON (recordJSON): about 660 bytes for a typical
// subscription, and at that size bbolt's node split leaves only three or
// four records on a 4 KiB page, so 1M subscriptions took 1.2 GB of leaf
// pages. Schema 2 writes recordBinary: the same fields, length-prefixed,
// about 370 bytes, eight to a page. Both decode, so a schema-1 file needs no
// rewrite pass: its records are re-encoded when they next change.
const (
	recordJSON   = 1
	recordBinary = 2
)

var errBadRecord = errors.New("corrupt subscription record")

func encodeSubscription(sub *Subscription) ([]byte, error) {
	w := recWriter{b: make([]byte, 0, 384)}
	w.b = append(w.b, recordBinary)
	w.str(sub.ID)
	w.uv(sub.VersionID)
	w.time(sub.Created)
	w.time(sub.LastUpdated)
	w.str(string(sub.Status))
	w.str(sub.Owner)
	if sub.Contacts == nil {
		w.uv(0)
	} else {
		w.uv(uint64(len(sub.Contacts)) + 1)
		for _, c := range sub.Contacts {
			w.str(c.System)
			w.str(c.Value)
			w.str(c.Use)
		}
	}
	w.str(sub.Reason)
	w.str(sub.CriteriaText)
	c := &sub.Criteria
	flags := byte(0)
	if c.HasAgeLT {
		flags |= 1
	}
	if c.HasAgeGT {
		flags |= 2
	}
	w.b = append(w.b, byte(c.Kind), byte(c.Registration), flags)
	w.str(c.ServiceType)
	w.str(c.NHSNumber)
	w.strs(c.Events)
	w.str(string(c.Rule))
	w.str(c.Organisation)
	w.b = binary.AppendVarint(w.b, int64(c.AgeLT))
	w.b = binary.AppendVarint(w.b, int64(c.AgeGT))
	w.str(c.Tag)
	w.str(sub.Channel.Type)
	w.str(sub.Channel.Endpoint)
	w.str(sub.Channel.Payload)
	w.strs(sub.Channel.Headers)
	w.time(sub.End)
	w.str(sub.EndText)
	w.str(sub.CreatedBy)
	return w.b, nil
}

func decodeSubscription(raw []byte) (*Subscription, error) {
	if len(raw) == 0 {
		return nil, errBadRecord
	}
	switch raw[0] {
	case recordJSON:
		var sub Subscription
		if err := json.Unmarshal(raw[1:], &sub); err != nil {
			return nil, err
		}
		return &sub, nil
	case recordBinary:
		return decodeBinaryRecord(raw[1:])
	}
	return nil, fmt.Errorf("unknown record encoding %d", raw[0])
}

func decodeBinaryRecord(b []byte) (*Subscription, error) {
	r := recReader{b: b}
	var sub Subscription
	sub.ID = r.str()
	sub.VersionID = r.uv()
	sub.Created = r.time()
	sub.LastUpdated = r.time()
	sub.Status = Status(r.str())
	sub.Owner = r.str()
	if n := r.count(); n > 0 {
		sub.Contacts = make([]Contact, n-1)
		for i := range sub.Contacts {
			sub.Contacts[i] = Contact{System: r.str(), Value: r.str(), Use: r.str()}
		}
	}
	sub.Reason = r.str()
	sub.CriteriaText = r.str()
	c := &sub.Criteria
	c.Kind, c.Registration = Kind(r.byte()), Registration(r.byte())
	flags := r.byte()
	c.HasAgeLT, c.HasAgeGT = flags&1 != 0, flags&2 != 0
	c.ServiceType = r.str()
	c.NHSNumber = r.str()
	c.Events = r.strs()
	c.Rule = RuleType(r.str())
	c.Organisation = r.str()
	c.AgeLT, c.AgeGT = int(r.v()), int(r.v())
	c.Tag = r.str()
	sub.Channel.Type = r.str()
	sub.Channel.Endpoint = r.str()
	sub.Channel.Payload = r.str()
	sub.Channel.Headers = r.strs()
	sub.End = r.time()
	sub.EndText = r.str()
	sub.CreatedBy = r.str()
	if r.err == nil && len(r.b) != 0 {
		r.err = errBadRecord
	}
	if r.err != nil {
		return nil, r.err
	}
	return &sub, nil
}

type recWriter struct{ b []byte }

func (w *recWriter) uv(v uint64) { w.b = binary.AppendUvarint(w.b, v) }

func (w *recWriter) str(s string) {
	w.uv(uint64(len(s)))
	w.b = append(w.b, s...)
}

// strs writes a list as its length plus one, keeping nil (0) apart from
// empty (1) as the JSON encoding did.
func (w *recWriter) strs(ss []string) {
	if ss == nil {
		w.uv(0)
		return
	}
	w.uv(uint64(len(ss)) + 1)
	for _, s := range ss {
		w.str(s)
	}
}

// time writes 0 for the zero time, else 1, the Unix seconds and
// nanoseconds and the zone offset: what RFC 3339 in the JSON kept.
// Seconds rather than UnixNano so that any year a client can send fits.
func (w *recWriter) time(t time.Time) {
	if t.IsZero() {
		w.b = append(w.b, 0)
		return
	}
	_, off := t.Zone()
	w.b = append(w.b, 1)
	w.b = binary.AppendVarint(w.b, t.Unix())
	w.uv(uint64(t.Nanosecond()))
	w.b = binary.AppendVarint(w.b, int64(off))
}

type recReader struct {
	b   []byte
	err error
}

func (r *recReader) fail() {
	r.err, r.b = errBadRecord, nil
}

func (r *recReader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *recReader) uv() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recReader) v() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recReader) str() string {
	l := r.uv()
	if uint64(len(r.b)) < l {
		r.fail()
		return ""
	}
	s := string(r.b[:l])
	r.b = r.b[l:]
	return s
}

// count reads a list length plus one; a corrupt count larger than the
// bytes left (every element takes at least one) fails rather than
// allocating.
func (r *recReader) count() uint64 {
	n := r.uv()
	if n > 1 && n-1 > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return n
}

func (r *recReader) strs() []string {
	n := r.count()
	if n == 0 {
		return nil
	}
	out := make([]string, n-1)
	for i := range out {
		out[i] = r.str()
	}
	return out
}

func (r *recReader) time() time.Time {
	switch r.byte() {
	case 0:
		return time.Time{}
	case 1:
	default:
		r.fail()
		return time.Time{}
	}
	sec, nsec, off := r.v(), r.uv(), r.v()
	if r.err != nil || nsec >= 1e9 {
		r.fail()
		return time.Time{}
	}
	// Only what RFC 3339 could have carried in: a record with a year past
	// 9999 or a zone a day or more off UTC was not written by this store,
	// and would fail again when served as JSON.
	if off <= -24*3600 || off >= 24*3600 {
		r.fail()
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if off == 0 {
		t = t.UTC()
	} else {
		t = t.In(time.FixedZone("", int(off)))
	}
	if y := t.Year(); y < 0 || y > 9999 {
		r.fail()
		return time.Time{}
	}
	return t
}
