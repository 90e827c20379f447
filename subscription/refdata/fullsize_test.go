package refdata

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fullSizeRows is the size of a current NSPL.
const fullSizeRows = 2_700_000

// writeNSPL writes an NSPL-shaped file: the 2025 header, 35 columns, rows
// of about the real width, postcodes in file order, ~2% terminated, and a
// few hundred distinct codes per geography as in the real directory.
func writeNSPL(t testing.TB, path string, rows int) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := "pcd7,pcd8,pcds,dointr,doterm,usrtypind,east1m,north1m,gridind,oa21cd,cty25cd,ced25cd,lad25cd,wd25cd,nhser24cd,ctry25cd,rgn25cd,pcon24cd,ttwa15cd,itl25cd,npark16cd,lsoa21cd,msoa21cd,wz11cd,sicbl24cd,bua24cd,ruc21ind,oac11ind,lat,long,lep21cd1,lep21cd2,pfa23cd,imd20ind,icb23cd"
	fmt.Fprint(w, hdr+"\r\n")
	rng := rand.New(rand.NewPCG(1, 2))
	n := 0
	for a := 0; n < rows; a++ {
		area := string(rune('A'+a/26%26)) + string(rune('A'+a%26))
		for d := 1; d <= 99 && n < rows; d++ {
			out := fmt.Sprintf("%s%d", area, d)
			la := 1 + (a*99+d)%360
			sub := 1 + la%106
			ctry := "E92000001"
			if la > 340 {
				ctry = "W92000004"
			}
			for in := 0; in < 2000 && n < rows; in++ {
				inward := fmt.Sprintf("%d%c%c", in%10, 'A'+in/10/26%26, 'A'+in/10%26)
				pcds := out + " " + inward
				pcd7 := out + strings.Repeat(" ", max(0, 7-len(out)-3)) + inward
				pcd8 := out + strings.Repeat(" ", 5-min(4, len(out))) + inward
				doterm := ""
				if rng.IntN(50) == 0 {
					doterm = "201506"
				}
				fmt.Fprintf(w, "\"%s\",\"%s\",\"%s\",\"198001\",\"%s\",\"0\",\"%06d\",\"%07d\",\"1\",\"E00%06d\",\"E99999999\",\"E99999999\",\"E06%06d\",\"E05%06d\",\"E40000012\",\"%s\",\"E12000001\",\"E14001%03d\",\"E30000064\",\"E06000057\",\"E65000001\",\"E01%06d\",\"E02%06d\",\"E33002161\",\"E38%06d\",\"E63999999\",\"RSN1\",\"1B1\",%.6f,%.6f,\"E37000025\",\"\",\"E23000007\",\"%d\",\"E54%06d\"\r\n",
					pcd7, pcd8, pcds, doterm, rng.IntN(700000), rng.IntN(1200000), n%200000, la, rng.IntN(9000), ctry, la%650, n/8%35000, n/40%7000, sub, 50.0+rng.Float64()*8, -5+rng.Float64()*6, rng.IntN(32000), 1+sub%42)
				n++
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	return st.Size()
}

func maxRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024 // Linux reports KiB
}

// TestImportFullSizeNSPL imports a generated 2.7M-row directory and reports
// time and peak RSS. It writes ~1 GB, so it runs only when asked:
// REFDATA_FULL=1 go test -run FullSize -v ./subscription/refdata
func TestImportFullSizeNSPL(t *testing.T) {
	if os.Getenv("REFDATA_FULL") == "" || testing.Short() {
		t.Skip("set REFDATA_FULL=1 to import a generated full-size NSPL (~1 GB on disk)")
	}
	rows := fullSizeRows
	if s := os.Getenv("REFDATA_FULL_ROWS"); s != "" {
		fmt.Sscan(s, &rows)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "NSPL_FULL.csv")
	start := time.Now()
	size := writeNSPL(t, src, rows)
	t.Logf("generated %d rows, %d MiB in %s", rows, size>>20, time.Since(start).Round(time.Millisecond))
	runtime.GC()
	rssBefore := maxRSS()

	db, err := bolt.Open(filepath.Join(dir, "ems.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := OpenStore(StoreOptions{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ticks int
	start = time.Now()
	v, err := s.Import(context.Background(), NSPL, f, Source{Name: "NSPL_FULL.csv", Size: size, Activate: true,
		Progress: func(p Progress) {
			ticks++
			if p.Bytes > p.Total || p.Rows <= 0 {
				t.Errorf("progress %+v", p)
			}
		}})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	dbSize := int64(0)
	if st, err := os.Stat(db.Path()); err == nil {
		dbSize = st.Size()
	}
	t.Logf("imported %d rows (%d terminated), %d MiB, in %s (%.0f rows/s, %d progress calls)", v.Rows, v.Terminated, v.Bytes>>20, took.Round(time.Millisecond), float64(v.Rows)/took.Seconds(), ticks)
	t.Logf("peak RSS %d MiB (%d MiB before the import); Go heap peak (sys) %d MiB; bbolt file %d MiB", maxRSS()>>20, rssBefore>>20, ms.Sys>>20, dbSize>>20)
	if v.Rows != int64(rows) {
		t.Errorf("rows = %d", v.Rows)
	}
	// Lookups on the full directory.
	start = time.Now()
	const probes = 200000
	found := 0
	err = s.View(func(r *Reader) error {
		for i := range probes {
			k := i * 7919 % (rows / 2000) // a district writeNSPL filled
			a, in := k/99, i%2000
			pc := fmt.Sprintf("%c%c%d %d%c%c", 'A'+a/26%26, 'A'+a%26, 1+k%99, in%10, 'A'+in/10/26%26, 'A'+in/10%26)
			if _, ok, err := r.Postcode(pc); err != nil {
				return err
			} else if ok {
				found++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d postcode lookups (%d found) in one read transaction: %s per lookup; peak RSS now %d MiB (the lookups page in the mmapped file)",
		probes, found, (time.Since(start) / probes).Round(time.Nanosecond), maxRSS()>>20)
	if max := os.Getenv("REFDATA_FULL_MAX_RSS_MIB"); max != "" {
		var m int64
		fmt.Sscan(max, &m)
		if maxRSS()>>20 > m {
			t.Errorf("peak RSS %d MiB > %d MiB", maxRSS()>>20, m)
		}
	}
}
