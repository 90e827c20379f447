package refdata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind names a reference dataset.
type Kind string

const (
	// NSPL is the ONS postcode directory (NSPL or ONSPD): postcode → local
	// authority, sub-ICB location, ICB and country GSS codes.
	NSPL Kind = "nspl"
	// SubICB is the ONS sub-ICB location lookup: GSS code (E38…) → ODS code.
	SubICB Kind = "subicb"
	// Practices is the ODS epraccur file: GP practice → parent sub-ICB.
	Practices Kind = "epraccur"
)

// Kinds lists the reference datasets in the order they are reported.
var Kinds = []Kind{NSPL, SubICB, Practices}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool { return k == NSPL || k == SubICB || k == Practices }

// FieldError is a row that does not validate: Column is 1-based, Name the
// header name when the file has one.
type FieldError struct {
	Column int
	Name   string
	Err    error
}

func (e *FieldError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("column %d (%s): %v", e.Column, e.Name, e.Err)
	}
	return fmt.Sprintf("column %d: %v", e.Column, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// format turns the rows of one file layout into keys and values. A format
// value holds the state of one import (column positions, dictionary).
type format interface {
	// header is given the first record of a file with a header row, or
	// nil for a headerless layout.
	header(rec []string) error
	row(rec []string) (key string, val []byte, err *FieldError)
}

func newFormat(k Kind) format {
	switch k {
	case NSPL:
		return &nsplFormat{}
	case SubICB:
		return &subICBFormat{}
	case Practices:
		return &practiceFormat{}
	}
	return nil
}

// headerless reports whether files of kind k start with data.
func headerless(k Kind) bool { return k == Practices }

func fieldErr(rec []string, names []string, i int, format string, args ...any) *FieldError {
	e := &FieldError{Column: i + 1, Err: fmt.Errorf(format, args...)}
	if i < len(names) {
		e.Name = names[i]
	}
	return e
}

// column is one field the importer needs and the header names it accepts,
// in order of preference; a name ending in "*cd" matches any name with that
// prefix and the suffix "cd", because ONS puts the vintage year in between
// (lad25cd, sicbl24cd) and renames them every release.
type column struct {
	field    string
	names    []string
	optional bool
}

func (c column) matches(name string) (rank int, ok bool) {
	for i, n := range c.names {
		if pre, found := strings.CutSuffix(n, "*cd"); found {
			if strings.HasPrefix(name, pre) && strings.HasSuffix(name, "cd") && len(name) >= len(pre)+2 && allDigits(name[len(pre):len(name)-2]) {
				return i, true
			}
		} else if name == n {
			return i, true
		}
	}
	return 0, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// mapColumns finds each wanted column in a header row. Two columns that
// match one field equally well are an error, not a guess.
func mapColumns(hdr []string, cols []column) ([]int, []string, error) {
	names := make([]string, len(hdr))
	for i, h := range hdr {
		h = strings.TrimPrefix(h, "\ufeff") // Excel-saved ONS files start with a BOM
		names[i] = strings.ToLower(strings.TrimSpace(h))
	}
	idx := make([]int, len(cols))
	for ci, c := range cols {
		idx[ci] = -1
		best := -1
		for i, n := range names {
			r, ok := c.matches(n)
			switch {
			case !ok:
			case best == -1 || r < best:
				best, idx[ci] = r, i
			case r == best:
				return nil, nil, &FieldError{Column: i + 1, Name: hdr[i],
					Err: fmt.Errorf("ambiguous header: both %q and %q could be the %s column", hdr[idx[ci]], hdr[i], c.field)}
			}
		}
		if idx[ci] == -1 && !c.optional {
			return nil, nil, fmt.Errorf("header has no %s column (looked for %s)", c.field, strings.Join(c.names, ", "))
		}
	}
	return idx, names, nil
}

var nsplColumns = []column{
	{field: "postcode", names: []string{"pcds", "pcd7", "pcd8", "pcd", "pcd2"}},
	{field: "local authority", names: []string{"lad*cd", "laua", "oslaua"}},
	{field: "sub-ICB location", names: []string{"sicbl*cd", "sicbl", "ccg*cd", "ccg"}},
	{field: "ICB", names: []string{"icb*cd", "icb", "stp*cd", "stp"}, optional: true},
	{field: "country", names: []string{"ctry*cd", "ctry"}},
	{field: "date of termination", names: []string{"doterm"}},
}

const (
	nsplPostcode = iota
	nsplLA
	nsplSubICB
	nsplICB
	nsplCountry
	nsplDoterm
)

// nsplFormat stores each postcode as a flag byte and four 2-byte indexes
// into a per-version dictionary of GSS codes: 2.7M postcodes share a few
// hundred distinct codes, and a 9-byte value keeps the full directory near
// 100 MB in bbolt instead of several times that.
type nsplFormat struct {
	idx   []int
	names []string
	dict  map[string]uint16
	codes []string // codes[i-1] has index i; 0 is "none"
}

func (f *nsplFormat) header(rec []string) error {
	idx, names, err := mapColumns(rec, nsplColumns)
	if err != nil {
		return err
	}
	f.idx, f.names, f.dict = idx, names, map[string]uint16{}
	return nil
}

const flagTerminated = 1

func (f *nsplFormat) row(rec []string) (string, []byte, *FieldError) {
	if len(rec) != len(f.names) {
		return "", nil, fieldErr(rec, nil, min(len(rec), len(f.names)), "row has %d fields, the header %d", len(rec), len(f.names))
	}
	i := f.idx[nsplPostcode]
	key, ok := NormalisePostcode(rec[i])
	if !ok {
		return "", nil, fieldErr(rec, f.names, i, "%q is not a postcode", rec[i])
	}
	val := make([]byte, 9)
	if i = f.idx[nsplDoterm]; trimField(rec[i]) != "" {
		if d := trimField(rec[i]); len(d) != 6 || !allDigits(d) {
			return "", nil, fieldErr(rec, f.names, i, "%q is not a termination month (yyyymm)", rec[i])
		}
		val[0] |= flagTerminated
	}
	for slot, c := range []int{nsplLA, nsplSubICB, nsplICB, nsplCountry} {
		i := f.idx[c]
		if i < 0 {
			continue
		}
		code := trimField(rec[i])
		if code == "" {
			continue
		}
		if !isGSS(code) {
			return "", nil, fieldErr(rec, f.names, i, "%q is not a GSS code", rec[i])
		}
		n, ok := f.dict[code]
		if !ok {
			if len(f.codes) == 0xffff {
				return "", nil, fieldErr(rec, f.names, i, "more than 65535 distinct codes: not a postcode directory")
			}
			f.codes = append(f.codes, code)
			n = uint16(len(f.codes))
			f.dict[code] = n
		}
		binary.BigEndian.PutUint16(val[1+2*slot:], n)
	}
	return key, val, nil
}

// PostcodeArea is what the postcode directory says about one postcode.
type PostcodeArea struct {
	Postcode       string `json:"postcode"`
	LocalAuthority string `json:"localAuthority,omitempty"`
	SubICBGSS      string `json:"subICBGSS,omitempty"`
	ICB            string `json:"icb,omitempty"`
	Country        string `json:"country,omitempty"`
	// Terminated: ONS has retired the postcode; it still maps to where it
	// was, because patient records keep old postcodes for years.
	Terminated bool `json:"terminated,omitempty"`
}

func decodeArea(key string, v []byte, dict []string) (PostcodeArea, error) {
	if len(v) != 9 {
		return PostcodeArea{}, fmt.Errorf("postcode %s: corrupt record", key)
	}
	a := PostcodeArea{Postcode: DisplayPostcode(key), Terminated: v[0]&flagTerminated != 0}
	out := []*string{&a.LocalAuthority, &a.SubICBGSS, &a.ICB, &a.Country}
	for slot, p := range out {
		n := int(binary.BigEndian.Uint16(v[1+2*slot:]))
		if n == 0 {
			continue
		}
		if n > len(dict) {
			return a, fmt.Errorf("postcode %s: code %d not in the dictionary", key, n)
		}
		*p = dict[n-1]
	}
	return a, nil
}

var subICBColumns = []column{
	{field: "sub-ICB GSS code (SICBL<yy>CD)", names: []string{"sicbl*cd", "ccg*cd"}},
	{field: "sub-ICB ODS code (SICBL<yy>CDH)", names: []string{"sicbl*cdh", "ccg*cdh"}},
	{field: "sub-ICB name (SICBL<yy>NM)", names: []string{"sicbl*nm", "ccg*nm"}, optional: true},
}

type subICBFormat struct {
	idx   []int
	names []string
}

func (f *subICBFormat) header(rec []string) error {
	// The lookup's columns end in CD, CDH and NM, so the "*cd" rule of the
	// postcode directory would not tell CD from CDH: rewrite the patterns.
	cols := make([]column, len(subICBColumns))
	copy(cols, subICBColumns)
	lower := make([]string, len(rec))
	for i, h := range rec {
		lower[i] = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
	}
	idx := make([]int, len(cols))
	for ci, c := range cols {
		idx[ci] = -1
		for i, n := range lower {
			if !lookupColumn(n, c.names) {
				continue
			}
			if idx[ci] != -1 {
				return &FieldError{Column: i + 1, Name: rec[i],
					Err: fmt.Errorf("ambiguous header: both %q and %q could be the %s column", rec[idx[ci]], rec[i], c.field)}
			}
			idx[ci] = i
		}
		if idx[ci] == -1 && !c.optional {
			return fmt.Errorf("header has no %s column", c.field)
		}
	}
	f.idx, f.names = idx, lower
	return nil
}

// lookupColumn matches "sicbl24cdh" against "sicbl*cdh": prefix, two-digit
// year, exact suffix.
func lookupColumn(name string, patterns []string) bool {
	for _, p := range patterns {
		pre, suf, _ := strings.Cut(p, "*")
		if strings.HasPrefix(name, pre) && strings.HasSuffix(name, suf) && len(name) == len(pre)+2+len(suf) && allDigits(name[len(pre):len(pre)+2]) {
			return true
		}
	}
	return false
}

func (f *subICBFormat) row(rec []string) (string, []byte, *FieldError) {
	if len(rec) != len(f.names) {
		return "", nil, fieldErr(rec, nil, min(len(rec), len(f.names)), "row has %d fields, the header %d", len(rec), len(f.names))
	}
	gss, ods := trimField(rec[f.idx[0]]), trimField(rec[f.idx[1]])
	if !isGSS(gss) {
		return "", nil, fieldErr(rec, f.names, f.idx[0], "%q is not a GSS code", rec[f.idx[0]])
	}
	if !isODS(ods) {
		return "", nil, fieldErr(rec, f.names, f.idx[1], "%q is not an ODS code", rec[f.idx[1]])
	}
	name := ""
	if f.idx[2] >= 0 {
		name = trimField(rec[f.idx[2]])
	}
	return gss, []byte(ods + "\x00" + name), nil
}

// SubICBArea is one row of the sub-ICB lookup.
type SubICBArea struct {
	GSS  string `json:"gss"`
	ODS  string `json:"ods"`
	Name string `json:"name,omitempty"`
}

func decodeSubICB(key string, v []byte) SubICBArea {
	ods, name, _ := strings.Cut(string(v), "\x00")
	return SubICBArea{GSS: key, ODS: ods, Name: name}
}

// epraccur columns (1-based in the ODS documentation, 0-based here).
const (
	epCode         = 0
	epName         = 1
	epPostcode     = 9
	epOpen         = 10
	epClose        = 11
	epStatus       = 12
	epCommissioner = 14
	epSetting      = 25
	epColumns      = 27
)

var epNames = func() []string {
	n := make([]string, epColumns)
	n[epCode], n[epName], n[epPostcode], n[epOpen] = "organisation code", "name", "postcode", "open date"
	n[epClose], n[epStatus], n[epCommissioner], n[epSetting] = "close date", "status", "commissioner", "prescribing setting"
	return n
}()

type practiceFormat struct{}

func (practiceFormat) header([]string) error { return nil }

func (practiceFormat) row(rec []string) (string, []byte, *FieldError) {
	if len(rec) != epColumns {
		return "", nil, fieldErr(rec, nil, min(len(rec), epColumns), "row has %d fields, epraccur has %d", len(rec), epColumns)
	}
	code := trimField(rec[epCode])
	if !isODS(code) {
		return "", nil, fieldErr(rec, epNames, epCode, "%q is not an ODS code", rec[epCode])
	}
	pc := trimField(rec[epPostcode])
	if pc != "" {
		k, ok := NormalisePostcode(pc)
		if !ok {
			return "", nil, fieldErr(rec, epNames, epPostcode, "%q is not a postcode", rec[epPostcode])
		}
		pc = DisplayPostcode(k)
	}
	if !isDate(trimField(rec[epOpen])) {
		return "", nil, fieldErr(rec, epNames, epOpen, "%q is not a date (yyyymmdd)", rec[epOpen])
	}
	if c := trimField(rec[epClose]); c != "" && !isDate(c) {
		return "", nil, fieldErr(rec, epNames, epClose, "%q is not a date (yyyymmdd)", rec[epClose])
	}
	switch trimField(rec[epStatus]) {
	case "A", "C", "D", "P":
	default:
		return "", nil, fieldErr(rec, epNames, epStatus, "%q is not a status (A, C, D or P)", rec[epStatus])
	}
	if c := trimField(rec[epCommissioner]); c != "" && !isODS(c) {
		return "", nil, fieldErr(rec, epNames, epCommissioner, "%q is not an ODS code", rec[epCommissioner])
	}
	if s := trimField(rec[epSetting]); s != "" && !allDigits(s) {
		return "", nil, fieldErr(rec, epNames, epSetting, "%q is not a prescribing setting number", rec[epSetting])
	}
	if strings.ContainsRune(rec[epName], 0) {
		return "", nil, fieldErr(rec, epNames, epName, "name contains a NUL byte")
	}
	v := strings.Join([]string{trimField(rec[epCommissioner]), trimField(rec[epStatus]), trimField(rec[epOpen]),
		trimField(rec[epClose]), trimField(rec[epSetting]), pc, trimField(rec[epName])}, "\x00")
	return code, []byte(v), nil
}

func isDate(s string) bool {
	if len(s) != 8 || !allDigits(s) {
		return false
	}
	_, err := time.Parse("20060102", s)
	return err == nil
}

// Practice is one GP practice (or other prescribing organisation) from
// epraccur.
type Practice struct {
	Code   string `json:"code"`
	Name   string `json:"name"`
	SubICB string `json:"subICB,omitempty"` // commissioner: parent sub-ICB ODS code
	// Status is A active, C closed, D dormant or P proposed.
	Status             string `json:"status"`
	Open               string `json:"open"`
	Close              string `json:"close,omitempty"`
	PrescribingSetting string `json:"prescribingSetting,omitempty"`
	Postcode           string `json:"postcode,omitempty"`
}

var errCorrupt = errors.New("corrupt record")

func decodePractice(key string, v []byte) (Practice, error) {
	p := strings.Split(string(v), "\x00")
	if len(p) != 7 {
		return Practice{}, fmt.Errorf("practice %s: %w", key, errCorrupt)
	}
	return Practice{Code: key, SubICB: p[0], Status: p[1], Open: p[2], Close: p[3], PrescribingSetting: p[4], Postcode: p[5], Name: p[6]}, nil
}
