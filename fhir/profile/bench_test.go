package profile

import (
	"os"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

func exampleData(b *testing.B) [][]byte {
	var out [][]byte
	for _, f := range exampleFiles(b) {
		d, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// BenchmarkParse is the baseline: parsing the 25 example bundles (one op =
// one bundle).
func BenchmarkParse(b *testing.B) {
	data := exampleData(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := fhir.ParseXML(data[i%len(data)], fhir.DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate is full profile validation of already parsed bundles.
func BenchmarkValidate(b *testing.B) {
	v := validator(b)
	var trees []*fhir.Node
	for _, d := range exampleData(b) {
		n, err := fhir.ParseXML(d, fhir.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		trees = append(trees, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v.ValidateBundle(trees[i%len(trees)], BundleOptions{})
	}
}

// BenchmarkStartup measures decoding the embedded rules (done once per
// process).
func BenchmarkStartup(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s, err := decodeEmbedded()
		if err != nil {
			b.Fatal(err)
		}
		newValidator(s, Options{})
	}
}

// BenchmarkRatio parses and validates each bundle in the same loop and
// reports validation time over parse time, which stays meaningful on a
// machine shared with other work (both halves see the same load).
func BenchmarkRatio(b *testing.B) {
	v := validator(b)
	data := exampleData(b)
	var parse, validate time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		n, err := fhir.ParseXML(data[i%len(data)], fhir.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		v.ValidateBundle(n, BundleOptions{})
		validate += time.Since(t1)
		parse += t1.Sub(t0)
	}
	b.ReportMetric(float64(validate)/float64(parse), "validate/parse")
	b.ReportMetric(float64(b.N)/(parse+validate).Seconds(), "msgs/s")
}
