package refdata

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openDB(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ems.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStore(t testing.TB, batch int) *Store {
	t.Helper()
	s, err := OpenStore(StoreOptions{DB: openDB(t), Logger: quietLogger(), BatchRows: batch})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func importFile(t testing.TB, s *Store, k Kind, name string) Version {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	v, err := s.Import(context.Background(), k, f, Source{Name: name, Size: st.Size(), Actor: "test", Activate: true})
	if err != nil {
		t.Fatalf("importing %s: %v", name, err)
	}
	return v
}

func lookup(t testing.TB, s *Store, pc string) (PostcodeArea, bool) {
	t.Helper()
	var a PostcodeArea
	var ok bool
	if err := s.View(func(r *Reader) error {
		var err error
		a, ok, err = r.Postcode(pc)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return a, ok
}

func TestNormalisePostcode(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"LS17 7DF", "LS177DF", true},
		{"ls17 7df", "LS177DF", true},
		{"LS177DF", "LS177DF", true},
		{" B1  1AA ", "B11AA", true},
		{"B1  1AA", "B11AA", true}, // pcd7 padding
		{"EC1A 1BB", "EC1A1BB", true},
		{"GIR 0AA", "GIR0AA", true},
		{"CA8\t7JG", "CA87JG", true},
		{"", "", false},
		{"LS17", "", false},
		{"LS17 7D", "", false},
		{"1S17 7DF", "", false},
		{"LS17 DDF", "", false},
		{"LS17-7DF", "", false},
		{"ABCDE 1AA", "", false},
	} {
		got, ok := NormalisePostcode(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("NormalisePostcode(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	if got := DisplayPostcode("B11AA"); got != "B1 1AA" {
		t.Errorf("DisplayPostcode = %q", got)
	}
}

// TestPostcodeVintages imports every header layout and checks that each
// maps the same postcodes to the same codes: the columns are found by
// prefix, whatever the vintage calls them and wherever they are.
func TestPostcodeVintages(t *testing.T) {
	want := map[string]PostcodeArea{
		"LS17 7DF": {Postcode: "LS17 7DF", LocalAuthority: "E08000035", SubICBGSS: "E38000225", ICB: "E54000054", Country: "E92000001"},
		"wf140bq":  {Postcode: "WF14 0BQ", LocalAuthority: "E08000034", SubICBGSS: "E38000236", ICB: "E54000054", Country: "E92000001"},
		"CA8  7JG": {Postcode: "CA8 7JG", LocalAuthority: "E06000057", SubICBGSS: "E38000130", ICB: "E54000050", Country: "E92000001"},
		"LS1 1AA":  {Postcode: "LS1 1AA", LocalAuthority: "E08000035", SubICBGSS: "E38000225", ICB: "E54000054", Country: "E92000001", Terminated: true},
		"CF10 1AA": {Postcode: "CF10 1AA", LocalAuthority: "W06000015", SubICBGSS: "W11000029", ICB: "W99999999", Country: "W92000004"},
		"AB1 0AA":  {Postcode: "AB1 0AA", LocalAuthority: "S12000033", SubICBGSS: "S03000012", ICB: "S99999999", Country: "S92000003", Terminated: true},
	}
	for _, file := range []string{"onspd-2020-02.csv", "nspl-2020-08.csv", "nspl-2025-05.csv", "nspl-2025-11.csv", "nspl-reordered.csv"} {
		t.Run(file, func(t *testing.T) {
			s := newStore(t, 4)
			v := importFile(t, s, NSPL, file)
			if v.Rows != 6 || v.Terminated != 2 || !v.Active || v.State != Ready || len(v.SHA256) != 64 {
				t.Errorf("version = %+v", v)
			}
			for in, w := range want {
				got, ok := lookup(t, s, in)
				if !ok || got != w {
					t.Errorf("%s: got %+v, %v; want %+v", in, got, ok, w)
				}
			}
			if _, ok := lookup(t, s, "ZZ9 9ZZ"); ok {
				t.Error("unknown postcode found")
			}
		})
	}
}

func TestSubICBAndPractices(t *testing.T) {
	for _, file := range []string{"subicb-2024.csv", "subicb-ccg-2021.csv"} {
		t.Run(file, func(t *testing.T) {
			s := newStore(t, 0)
			importFile(t, s, SubICB, file)
			importFile(t, s, Practices, "epraccur.csv")
			err := s.View(func(r *Reader) error {
				for gss, ods := range map[string]string{"E38000225": "15F", "E38000236": "X2C4Y", "E38000130": "00L"} {
					a, ok, err := r.SubICB(gss)
					if err != nil || !ok || a.ODS != ods || a.Name == "" {
						t.Errorf("SubICB(%s) = %+v, %v, %v", gss, a, ok, err)
					}
				}
				if _, ok, _ := r.SubICB("E38000001"); ok {
					t.Error("unknown sub-ICB found")
				}
				p, ok, err := r.Practice("B86999")
				want := Practice{Code: "B86999", Name: "CLOSED SURGERY", SubICB: "15F", Status: "C", Open: "19900101", Close: "20190331", PrescribingSetting: "4", Postcode: "LS1 3EX"}
				if err != nil || !ok || p != want {
					t.Errorf("Practice = %+v, %v, %v", p, ok, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Label(); got != "subicb@1,epraccur@1" {
				t.Errorf("Label = %q", got)
			}
		})
	}
}

func TestHeaderErrors(t *testing.T) {
	for _, c := range []struct {
		name, kind, header, want string
	}{
		{"no postcode", "nspl", "lad25cd,sicbl24cd,ctry25cd,doterm", "no postcode column"},
		{"no la", "nspl", "pcds,sicbl24cd,ctry25cd,doterm", "no local authority column"},
		{"two years", "nspl", "pcds,lad24cd,lad25cd,sicbl24cd,ctry25cd,doterm", `column 3 (lad25cd): ambiguous header`},
		{"not a year", "nspl", "pcds,ladxxcd,sicbl24cd,ctry25cd,doterm", "no local authority column"},
		{"lookup no cdh", "subicb", "SICBL24CD,SICBL24NM", "no sub-ICB ODS code"},
		{"lookup two", "subicb", "CCG21CD,CCG21CDH,SICBL22CD,SICBL22CDH", "ambiguous header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t, 0)
			_, err := s.Import(context.Background(), Kind(c.kind), strings.NewReader(c.header+"\n"), Source{Name: "f.csv"})
			var ie *ImportError
			if !errors.As(err, &ie) || ie.Line != 1 || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want line 1 and %q", err, c.want)
			}
		})
	}
}

// TestImportFailures: each broken file names its line and leaves the active
// dataset exactly as it was.
func TestImportFailures(t *testing.T) {
	good, err := os.ReadFile("testdata/nspl-2025-11.csv")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\r\n")
	badRow := strings.Join(lines[:4], "") + strings.Replace(lines[4], "E92000001", "England", 1) + strings.Join(lines[5:], "")
	for _, c := range []struct {
		name, body, want string
		line             int
		size             int64
	}{
		{"truncated mid-line", string(good[:len(good)-40]), "the file looks truncated: row has 26 fields", 7, 0},
		{"truncated mid-quote", string(good[:len(good)-20]), "", 7, 0},
		{"truncated against size", strings.Join(lines[:5], ""), "expected", 0, int64(len(good))},
		{"bad row", badRow, `column 16 (ctry25cd): "England" is not a GSS code`, 5, 0},
		{"short row", strings.Join(lines[:3], "") + "\"LS1 1AA\",\"\"\r\n", "row has 2 fields, the header 35", 4, 0},
		{"bad postcode", strings.Join(lines[:2], "") + strings.ReplaceAll(lines[2], `"WF14 0BQ"`, `"WF14"`), `column 3 (pcds): "WF14" is not a postcode`, 3, 0},
		{"bad doterm", strings.Join(lines[:2], "") + strings.Replace(lines[2], `"198001",""`, `"198001","2020"`, 1), "column 5 (doterm)", 3, 0},
		{"wrong columns", "postcode,district,country\r\nLS17 7DF,E08000035,E92000001\r\n", "no postcode column", 1, 0},
		{"wrong file", "\"B86056\",\"SHADWELL\"\r\n", "no postcode column", 1, 0},
		{"header only", lines[0], "no data rows", 0, 0},
		{"empty", "", "empty file", 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t, 2)
			before := importFile(t, s, NSPL, "nspl-2020-08.csv")
			_, err := s.Import(context.Background(), NSPL, strings.NewReader(c.body), Source{Name: "NSPL.csv", Size: c.size, Activate: true})
			var ie *ImportError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v; want an ImportError", err)
			}
			if ie.File != "NSPL.csv" || ie.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v (line %d); want line %d and %q", err, ie.Line, c.line, c.want)
			}
			vs, err := s.Versions(NSPL)
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 || vs[0].Version != before.Version || !vs[0].Active {
				t.Errorf("versions after a failed import = %+v", vs)
			}
			if a, ok := lookup(t, s, "LS17 7DF"); !ok || a.LocalAuthority != "E08000035" {
				t.Errorf("active data changed: %+v %v", a, ok)
			}
			assertNoOrphans(t, s)
		})
	}
}

// assertNoOrphans: every data bucket belongs to a listed version.
func assertNoOrphans(t *testing.T, s *Store) {
	t.Helper()
	_ = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketData).ForEach(func(name, _ []byte) error {
			k, rest, _ := strings.Cut(string(name), "/")
			var n uint64
			for _, c := range strings.TrimSuffix(rest, ".dict") {
				n = n*10 + uint64(c-'0')
			}
			if tx.Bucket(bucketMeta).Get(versionKey(Kind(k), n)) == nil {
				t.Errorf("orphan data bucket %s", name)
			}
			return nil
		})
	})
}

// blockingReader hands out its data, then waits until released and fails
// or ends, so a test can look at the store while an import is half done.
type blockingReader struct {
	data    *bytes.Reader
	reached chan struct{}
	once    sync.Once
	release chan error
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.data.Len() > 0 {
		return b.data.Read(p)
	}
	b.once.Do(func() { close(b.reached) })
	if err := <-b.release; err != nil {
		return 0, err
	}
	return 0, io.EOF
}

func TestReadersSeeOldVersionDuringImport(t *testing.T) {
	s := newStore(t, 1) // a transaction per row, so staging rows are committed
	importFile(t, s, NSPL, "nspl-2020-08.csv")
	good, _ := os.ReadFile("testdata/nspl-reordered.csv")
	// The new file moves LS17 7DF to another authority.
	body := bytes.ReplaceAll(good, []byte("E08000035,ls17 7df"), []byte("E08000099,ls17 7df"))
	for _, fail := range []bool{true, false} {
		br := &blockingReader{data: bytes.NewReader(body), reached: make(chan struct{}), release: make(chan error)}
		done := make(chan error)
		go func() {
			_, err := s.Import(context.Background(), NSPL, br, Source{Name: "new.csv", Activate: true})
			done <- err
		}()
		<-br.reached
		if a, _ := lookup(t, s, "LS17 7DF"); a.LocalAuthority != "E08000035" {
			t.Fatalf("a reader saw the staging version: %+v", a)
		}
		vs, _ := s.Versions(NSPL)
		if len(vs) != 2 || vs[1].State != Staging || vs[1].Active {
			t.Fatalf("versions while importing = %+v", vs)
		}
		if _, err := s.Import(context.Background(), NSPL, strings.NewReader(""), Source{Name: "x"}); !errors.Is(err, ErrBusy) {
			t.Errorf("second import: %v; want ErrBusy", err)
		}
		if fail {
			br.release <- errors.New("connection reset")
			if err := <-done; err == nil || !strings.Contains(err.Error(), "connection reset") {
				t.Fatalf("import err = %v", err)
			}
			if a, _ := lookup(t, s, "LS17 7DF"); a.LocalAuthority != "E08000035" {
				t.Fatalf("failed import visible: %+v", a)
			}
			continue
		}
		close(br.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if a, _ := lookup(t, s, "LS17 7DF"); a.LocalAuthority != "E08000099" {
			t.Fatalf("new version not active: %+v", a)
		}
	}
	assertNoOrphans(t, s)
}

func TestActivateRollbackRetention(t *testing.T) {
	s := newStore(t, 0)
	if _, err := s.Rollback(NSPL, "op"); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("rollback with nothing: %v", err)
	}
	v1 := importFile(t, s, NSPL, "nspl-2020-08.csv")
	good, _ := os.ReadFile("testdata/nspl-reordered.csv")
	v2, err := s.Import(context.Background(), NSPL, bytes.NewReader(bytes.ReplaceAll(good, []byte("E08000035,ls17"), []byte("E08000099,ls17"))),
		Source{Name: "v2.csv", Activate: true, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := lookup(t, s, "LS17 7DF"); a.LocalAuthority != "E08000099" || s.Label() != "nspl@2" {
		t.Fatalf("v2 not active: %+v %s", a, s.Label())
	}
	rb, err := s.Rollback(NSPL, "bob")
	if err != nil || rb.Version != v1.Version || rb.Actor != "bob" {
		t.Fatalf("rollback = %+v, %v", rb, err)
	}
	if a, _ := lookup(t, s, "LS17 7DF"); a.LocalAuthority != "E08000035" || s.Label() != "nspl@1" {
		t.Fatalf("rollback not effective: %+v %s", a, s.Label())
	}
	// Rolling back again returns to v2: the pointer swaps.
	if v, err := s.Rollback(NSPL, "bob"); err != nil || v.Version != v2.Version {
		t.Fatalf("second rollback = %+v, %v", v, err)
	}
	// A third version, imported without activation, is kept beside both.
	v3 := importFile(t, s, NSPL, "nspl-2025-11.csv")
	vs, _ := s.Versions(NSPL)
	if len(vs) != 2 || vs[0].Version != v2.Version || vs[1].Version != v3.Version || !vs[1].Active || !vs[0].Previous {
		t.Errorf("after v3, versions = %+v (v1 should be pruned)", vs)
	}
	if _, err := s.Activate(NSPL, 99, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("activate unknown: %v", err)
	}
	assertNoOrphans(t, s)
}

func TestStagingDiscardedOnReopen(t *testing.T) {
	db := openDB(t)
	s, err := OpenStore(StoreOptions{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	importFile(t, s, NSPL, "nspl-2025-11.csv")
	// What a crash mid-import leaves: a staging record and some rows.
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketData).CreateBucket(dataName(NSPL, 2))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("LS177DF"), make([]byte, 9)); err != nil {
			return err
		}
		return putVersion(tx, Version{Kind: NSPL, Version: 2, State: Staging, Source: "crash.csv"})
	})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(StoreOptions{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if vs, _ := s2.Versions(NSPL); len(vs) != 1 || vs[0].Version != 1 || !vs[0].Active {
		t.Errorf("versions after reopen = %+v", vs)
	}
	if a, ok := lookup(t, s2, "LS17 7DF"); !ok || a.LocalAuthority != "E08000035" {
		t.Errorf("lookup after reopen = %+v", a)
	}
	assertNoOrphans(t, s2)
}
