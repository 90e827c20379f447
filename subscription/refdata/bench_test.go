package refdata

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ems-broker/ems/subscription"
)

// BenchmarkEnrich measures the per-event cost the enricher adds before
// matching: one demographics read, one practice, two postcodes (a change
// of address) and their sub-ICBs. It is run at two directory sizes to show
// that the cost follows the B-tree depth, not the row count:
//
//	go test -run '^$' -bench Enrich ./subscription/refdata
//	REFDATA_FULL=1 go test -run '^$' -bench Enrich ./subscription/refdata   (2.7M rows)
func BenchmarkEnrich(b *testing.B) {
	sizes := []int{20_000}
	if os.Getenv("REFDATA_FULL") != "" {
		sizes = append(sizes, fullSizeRows)
	}
	for _, rows := range sizes {
		b.Run(fmt.Sprintf("nspl=%d", rows), func(b *testing.B) {
			dir := b.TempDir()
			src := filepath.Join(dir, "nspl.csv")
			size := writeNSPL(b, src, rows)
			svc, err := New(Options{DB: openDB(b), Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := svc.Store().Import(context.Background(), NSPL, f, Source{Name: "nspl.csv", Size: size, Activate: true}); err != nil {
				b.Fatal(err)
			}
			f.Close()
			os.Remove(src)
			importFile(b, svc.Store(), SubICB, "subicb-2024.csv")
			importFile(b, svc.Store(), Practices, "epraccur.csv")
			reg := true
			if err := svc.Patients().Put(Patient{NHSNumber: nhsMover, GPPractice: "B86056", Registered: &reg, Postcode: "AA10AA"}); err != nil {
				b.Fatal(err)
			}
			// A change of address between two generated postcodes.
			bundle := readEvent(b, "PDS-Change-Of-Address-ems-example.xml", "LS17 7DF", "AA3 3AC", "WF14 0BQ", "AA2 1AB")
			facts := subscription.EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsMover}
			var out subscription.EventFacts
			b.ResetTimer()
			for b.Loop() {
				out, _, err = svc.Enrich(context.Background(), facts, bundle)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if len(out.LocalAuthority) != 2 || out.GPSubICB != "15F" {
				b.Fatalf("facts = %+v", out)
			}
		})
	}
}
