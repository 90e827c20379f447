package broker

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// benchFiles are the valid examples the benchmarks cycle through.
var benchFiles = []string{
	"vaccinations-1-new.xml", "blood-spot-test-outcome-1-new.xml", "newborn-hearing-1-new.xml",
	"nipe-outcome-1-new.xml", "Professional-Contacts-1-new.xml", "PDS-Change-Of-GP-ems-example.xml",
	"BirthNotificationWithoutMother.xml", "PDS-Record-Change.xml",
}

func benchBodies(b *testing.B) ([][]byte, int) {
	var bodies [][]byte
	total := 0
	for _, f := range benchFiles {
		body := readExample(b, f)
		bodies = append(bodies, body)
		total += len(body)
	}
	return bodies, total
}

// BenchmarkValidate is the generic event rules alone, on parsed trees.
func BenchmarkValidate(b *testing.B) {
	bodies, total := benchBodies(b)
	var roots []*fhir.Node
	for _, body := range bodies {
		root, err := fhir.ParseXML(body, fhir.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		roots = append(roots, root)
	}
	v := newValidator()
	b.SetBytes(int64(total / len(bodies)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, issues := v.Validate(roots[i%len(roots)]); len(errorsOf(issues)) > 0 {
			b.Fatal(issues)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublishHandler is the whole $process-message path: read, parse,
// order check, NEMS rules, profile validation, JetStream publish with
// de-duplication and wait for the acknowledgement (in-process server,
// default sync interval). The sub-benchmark without profiles shows their
// share.
func BenchmarkPublishHandler(b *testing.B) {
	b.Run("profiles", func(b *testing.B) {
		benchPublish(b, func(o *Options) { o.Profiles = profileValidator(b) })
	})
	b.Run("nems-rules-only", func(b *testing.B) { benchPublish(b, nil) })
}

func benchPublish(b *testing.B, mutate func(*Options)) {
	bodies, total := benchBodies(b)
	h, _ := newTestHandler(b, mutate)
	// Give each iteration a fresh MessageHeader.id so that de-duplication
	// does not short-cut the store.
	ids := make([][]byte, len(bodies))
	for i, body := range bodies {
		root, err := fhir.ParseXML(body, fhir.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = []byte(indexBundle(root).entries[0].resource.Str("id"))
	}
	b.SetBytes(int64(total / len(bodies)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		k := n % len(bodies)
		id := []byte(uuidFor(n))
		body := bytes.Replace(bodies[k], ids[k], id, 1)
		req := httptest.NewRequest(http.MethodPost, ProcessMessagePath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+xml")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		n++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// uuidFor makes a distinct, valid UUID per iteration.
func uuidFor(n int) string {
	const hex = "0123456789abcdef"
	buf := []byte("00000000-0000-4000-8000-000000000000")
	for i := len(buf) - 1; i >= 0 && n > 0; i-- {
		if buf[i] == '-' {
			continue
		}
		buf[i] = hex[n%16]
		n /= 16
	}
	return string(buf)
}
