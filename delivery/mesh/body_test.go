package mesh

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStoredBodyEncodings: whatever the inbox stores, a MESH client gets
// the bundle as published, in one piece or in chunks, and never sees the
// storage header; a body that cannot be decoded is a server error, not a
// truncated or garbled message.
func TestStoredBodyEncodings(t *testing.T) {
	bundle, err := os.ReadFile(filepath.Join("..", "..", "testdata", "nems-examples", "vaccinations-1-new.xml"))
	if err != nil {
		t.Fatal(err)
	}
	compressed, enc := EncodeBody(bundle)
	if len(compressed) >= len(bundle) {
		t.Fatalf("an example bundle of %d bytes stored as %d", len(bundle), len(compressed))
	}
	for _, indexed := range []bool{false, true} {
		t.Run(fmt.Sprint("indexed=", indexed), func(t *testing.T) {
			e := newMeshEnv(t, 1000, indexed)
			c := &client{base: e.srv.URL, mb: "MB1", pw: "pw1", nonce: "n1", now: func() time.Time { return e.now }}
			at := e.now.Add(-time.Minute)
			cases := []struct {
				name, encoding string
				stored         []byte
				status         int
			}{
				{"earlier version, raw", "", bundle, 200},
				{"s2", enc, compressed, 200},
				{"s2, damaged", enc, append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, compressed[5:]...), 500},
				{"unknown encoding", "zstd", compressed, 500},
			}
			ids := make([]string, len(cases))
			for i, tc := range cases {
				ids[i] = e.putEncoded(t, "MB1", tc.stored, tc.encoding, at.Add(time.Duration(i)*time.Millisecond), tc.name)
			}
			if indexed {
				waitIndexed(t, e.store)
			}
			for i, tc := range cases {
				// In 1,000-byte chunks: 206 for each but the last, 200 for it.
				var got []byte
				for n := 1; ; n++ {
					path := "/MB1/inbox/" + ids[i]
					if n > 1 {
						path += fmt.Sprint("/", n)
					}
					r, b := c.do(t, "GET", path)
					if r.Header.Get(HeaderBodyEncoding) != "" {
						t.Fatalf("%s: the storage header reached the client", tc.name)
					}
					if tc.status != 200 {
						if r.StatusCode != tc.status {
							t.Fatalf("%s: status %d, want %d", tc.name, r.StatusCode, tc.status)
						}
						break
					}
					if r.StatusCode != 200 && r.StatusCode != 206 {
						t.Fatalf("%s: chunk %d: status %d", tc.name, n, r.StatusCode)
					}
					got = append(got, b...)
					if r.StatusCode == 200 {
						break
					}
				}
				if tc.status == 200 && !bytes.Equal(got, bundle) {
					t.Fatalf("%s: chunks reassemble %d bytes, want the %d published", tc.name, len(got), len(bundle))
				}
			}
		})
	}
}

func TestDecodeBodyBounds(t *testing.T) {
	h := nats.Header{}
	h.Set(HeaderBodyEncoding, bodyS2)
	// A length prefix claiming 1 GiB: refused before allocating it.
	claim := []byte{0x80, 0x80, 0x80, 0x80, 0x04}
	if _, err := decodeBody(h, claim); err == nil {
		t.Fatal("a body claiming 1 GiB decoded")
	}
	stored, _ := EncodeBody(nil)
	if b, err := decodeBody(h, stored); err != nil || len(b) != 0 {
		t.Fatalf("empty body: %q %v", b, err)
	}
}

func (e *meshEnv) putEncoded(t *testing.T, mb string, stored []byte, encoding string, at time.Time, event string) string {
	t.Helper()
	id := MessageID(at, event, mb)
	h := nats.Header{}
	h.Set("Mex-To", mb)
	h.Set("Mex-WorkflowID", "VACCINATIONS_1")
	if encoding != "" {
		h.Set(HeaderBodyEncoding, encoding)
	}
	_, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: Subject(mb, id), Header: h, Data: stored}, jetstream.WithMsgID(id))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
