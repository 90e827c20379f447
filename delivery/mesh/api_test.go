package mesh

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

const sharedKey = "BackBone"

type meshEnv struct {
	srv   *httptest.Server
	store *Store
	js    jetstream.JetStream
	now   time.Time
}

// newMeshEnv serves the API over a store that answers from its index when
// indexed, from the streams otherwise.
func newMeshEnv(t *testing.T, chunk int, indexed bool) *meshEnv {
	t.Helper()
	ns := testnats.Start(t, "")
	ctx := context.Background()
	store, err := NewStore(ctx, ns.JS, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if indexed {
		runIndex(t, store)
	}
	e := &meshEnv{store: store, js: ns.JS, now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	auth := NewAuthenticator(AuthOptions{SharedKey: sharedKey, Passwords: map[string]string{"MB1": "pw1", "MB2": "pw2"},
		MaxSkew: 10 * time.Minute, Now: func() time.Time { return e.now }})
	e.srv = httptest.NewServer(NewHandler(HandlerOptions{Store: store, Auth: auth, ChunkSize: chunk, Now: func() time.Time { return e.now }}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *meshEnv) put(t *testing.T, mb, workflow string, body []byte, at time.Time, event string) string {
	t.Helper()
	id := MessageID(at, event, mb)
	h := nats.Header{}
	h.Set("Mex-To", mb)
	h.Set("Mex-WorkflowID", workflow)
	h.Set("Mex-PartnerID", "s1|tag")
	_, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: Subject(mb, id), Header: h, Data: body}, jetstream.WithMsgID(id))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// client is a MESH client in the shape of NHS's mesh_client: one nonce per
// session, the count incremented per request, v2 and gzip.
type client struct {
	base, mb, pw, nonce string
	count               int
	v1, gzip            bool
	now                 func() time.Time
}

func (c *client) do(t *testing.T, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, c.base+APIPrefix+path, nil)
	c.count++
	req.Header.Set("Authorization", Token(sharedKey, c.mb, c.pw, c.nonce, c.count, c.now()))
	if !c.v1 {
		req.Header.Set("Accept", "application/vnd.mesh.v2+json")
	}
	if c.gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	req.Header.Set("Mex-ClientVersion", "test")
	req.Header.Set("Mex-OSName", "linux")
	req.Header.Set("Mex-OSVersion", "6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(zr)
	}
	return resp, b
}

func TestInboxLifecycle(t *testing.T) {
	for _, indexed := range []bool{false, true} {
		t.Run(map[bool]string{false: "streams", true: "indexed"}[indexed], func(t *testing.T) {
			testInboxLifecycle(t, indexed)
		})
	}
}

func testInboxLifecycle(t *testing.T, indexed bool) {
	e := newMeshEnv(t, 1000, indexed)
	c := &client{base: e.srv.URL, mb: "MB1", pw: "pw1", nonce: "n1", gzip: true, now: func() time.Time { return e.now }}
	at := e.now.Add(-time.Minute)
	var ids []string
	for i := range 25 {
		wf := "CHANGEOFGP_1"
		if i%2 == 1 {
			wf = "PDSRECORDCHANGE_1"
		}
		ids = append(ids, e.put(t, "MB1", wf, []byte(fmt.Sprintf("<Bundle n=\"%d\"/>", i)), at.Add(time.Duration(i)*time.Millisecond), fmt.Sprint("ev", i)))
	}
	big := bytes.Repeat([]byte("x"), 2500)
	bigID := e.put(t, "MB1", "VACCINATIONS_1", big, at.Add(time.Second), "big")
	e.put(t, "MB2", "CHANGEOFGP_1", []byte("other"), at, "other")
	if indexed {
		waitIndexed(t, e.store)
	}

	if r, _ := c.do(t, "GET", "/_ping"); r.StatusCode != 200 {
		t.Fatalf("ping %d", r.StatusCode)
	}
	if r, b := c.do(t, "POST", "/MB1"); r.StatusCode != 200 || len(bytes.TrimSpace(b)) != 0 {
		t.Fatalf("handshake v2 %d %q", r.StatusCode, b)
	}

	// Paging with max_results and links.next.
	var all []string
	path := "/MB1/inbox?max_results=10"
	for path != "" {
		r, b := c.do(t, "GET", path)
		if r.StatusCode != 200 {
			t.Fatalf("inbox %d %s", r.StatusCode, b)
		}
		var page struct {
			Messages []string          `json:"messages"`
			Links    map[string]string `json:"links"`
			Count    int               `json:"approx_inbox_count"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		if page.Count != 26 {
			t.Fatalf("approx_inbox_count %d", page.Count)
		}
		all = append(all, page.Messages...)
		path = strings.TrimPrefix(page.Links["next"], APIPrefix)
	}
	if want := append(append([]string{}, ids...), bigID); strings.Join(all, ",") != strings.Join(want, ",") {
		t.Fatalf("listed\n%v\nwant\n%v", all, want)
	}

	for filter, want := range map[string]int{"CHANGEOFGP_1": 13, "!CHANGEOFGP_1": 13, "PDS*": 12, "!PDS*": 14, "*GP*": 13, "!*GP*": 13} {
		_, b := c.do(t, "GET", "/MB1/inbox?workflow_filter="+filter)
		var page struct{ Messages []string }
		_ = json.Unmarshal(b, &page)
		if len(page.Messages) != want {
			t.Errorf("workflow_filter %s: %d, want %d", filter, len(page.Messages), want)
		}
	}

	// Retrieve: headers and body.
	r, b := c.do(t, "GET", "/MB1/inbox/"+ids[0])
	if r.StatusCode != 200 || string(b) != `<Bundle n="0"/>` {
		t.Fatalf("retrieve %d %q", r.StatusCode, b)
	}
	for k, v := range map[string]string{"Mex-WorkflowID": "CHANGEOFGP_1", "Mex-PartnerID": "s1|tag", "Mex-MessageID": ids[0],
		"Mex-StatusEvent": "TRANSFER", "Mex-StatusSuccess": "SUCCESS", "Mex-MessageType": "DATA", "Mex-To": "MB1",
		"Mex-Chunk-Range": "1:1", "Content-Encoding": "gzip", "Mex-FileName": ids[0] + ".dat"} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse("20060102150405", r.Header.Get("Mex-StatusTimestamp")); err != nil {
		t.Errorf("Mex-StatusTimestamp: %v", err)
	}

	// Chunked: 2500 bytes at 1000 per chunk.
	c.gzip = false
	var got []byte
	for n := 1; n <= 3; n++ {
		p := "/MB1/inbox/" + bigID
		if n > 1 {
			p += fmt.Sprint("/", n)
		}
		r, b := c.do(t, "GET", p)
		want := 206
		if n == 3 {
			want = 200
		}
		if r.StatusCode != want || r.Header.Get("Mex-Chunk-Range") != fmt.Sprintf("%d:3", n) {
			t.Fatalf("chunk %d: %d %s", n, r.StatusCode, r.Header.Get("Mex-Chunk-Range"))
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("chunks do not reassemble the body")
	}
	if r, b := c.do(t, "HEAD", "/MB1/inbox/"+bigID); r.StatusCode != 206 || len(b) != 0 || r.Header.Get("Mex-MessageID") != bigID {
		t.Fatalf("HEAD %d %d", r.StatusCode, len(b))
	}

	// Another mailbox's message is not found through this one.
	if r, _ := c.do(t, "GET", "/MB1/inbox/nope_1"); r.StatusCode != 404 {
		t.Fatalf("unknown: %d", r.StatusCode)
	}

	// Acknowledge: idempotent, then 410 and no longer listed.
	for range 2 {
		if r, _ := c.do(t, "PUT", "/MB1/inbox/"+ids[0]+"/status/acknowledged"); r.StatusCode != 200 {
			t.Fatalf("ack %d", r.StatusCode)
		}
	}
	if r, _ := c.do(t, "GET", "/MB1/inbox/"+ids[0]); r.StatusCode != 410 {
		t.Fatalf("acked retrieve %d", r.StatusCode)
	}
	_, b = c.do(t, "GET", "/MB1/inbox?max_results=10")
	if strings.Contains(string(b), ids[0]) {
		t.Fatal("acknowledged message still listed")
	}
	// continue_from an acknowledged id still pages on.
	_, b = c.do(t, "GET", "/MB1/inbox?max_results=10&continue_from="+ids[0])
	if !strings.Contains(string(b), ids[1]) {
		t.Fatalf("continue_from acked id: %s", b)
	}
	// A late duplicate of an acknowledged message (a fan-out re-run after
	// the duplicate window) stays invisible.
	h := nats.Header{}
	h.Set("Mex-WorkflowID", "CHANGEOFGP_1")
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: Subject("MB1", ids[0]), Header: h, Data: []byte("dup")}); err != nil {
		t.Fatal(err)
	}
	_, b = c.do(t, "GET", "/MB1/count")
	if !strings.Contains(string(b), `"count":25`) && !strings.Contains(string(b), `"count":26`) {
		t.Fatalf("count %s", b)
	}
	_, b = c.do(t, "GET", "/MB1/inbox?max_results=100")
	if strings.Contains(string(b), ids[0]) {
		t.Fatal("re-created acknowledged message listed")
	}

	// v1 shapes.
	c.v1 = true
	if _, b := c.do(t, "POST", "/MB1"); !strings.Contains(string(b), `"mailboxId":"MB1"`) {
		t.Fatalf("v1 handshake %s", b)
	}
	if _, b := c.do(t, "PUT", "/MB1/inbox/"+ids[1]+"/status/acknowledged"); !strings.Contains(string(b), `"messageId":"`+ids[1]) {
		t.Fatalf("v1 ack %s", b)
	}
	if _, b := c.do(t, "GET", "/MB1/count"); !strings.Contains(string(b), "allResultsIncluded") {
		t.Fatalf("v1 count %s", b)
	}
}

func TestAuthentication(t *testing.T) {
	e := newMeshEnv(t, 0, true)
	now := func() time.Time { return e.now }
	good := &client{base: e.srv.URL, mb: "MB1", pw: "pw1", nonce: "n", now: now}
	if r, _ := good.do(t, "GET", "/MB1/inbox"); r.StatusCode != 200 {
		t.Fatalf("good: %d", r.StatusCode)
	}
	cases := []struct {
		name string
		c    *client
		path string
	}{
		{"wrong password", &client{base: e.srv.URL, mb: "MB1", pw: "bad", nonce: "a", now: now}, "/MB1/inbox"},
		{"other mailbox's path", &client{base: e.srv.URL, mb: "MB2", pw: "pw2", nonce: "b", now: now}, "/MB1/inbox"},
		{"unknown mailbox", &client{base: e.srv.URL, mb: "MB9", pw: "x", nonce: "c", now: now}, "/MB9/inbox"},
		{"stale timestamp", &client{base: e.srv.URL, mb: "MB1", pw: "pw1", nonce: "d", now: func() time.Time { return e.now.Add(-time.Hour) }}, "/MB1/inbox"},
	}
	for _, tc := range cases {
		if r, _ := tc.c.do(t, "GET", tc.path); r.StatusCode != 403 {
			t.Errorf("%s: %d, want 403", tc.name, r.StatusCode)
		}
	}
	// Replaying the same (nonce, count) is refused.
	good.count--
	if r, _ := good.do(t, "GET", "/MB1/inbox"); r.StatusCode != 403 {
		t.Errorf("replayed nonce: %d", r.StatusCode)
	}
	// Handshake without the Mex-* client headers is a 400.
	req, _ := http.NewRequest("POST", e.srv.URL+APIPrefix+"/MB1", nil)
	req.Header.Set("Authorization", Token(sharedKey, "MB1", "pw1", "z", 1, e.now))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("handshake without headers: %d", resp.StatusCode)
	}
}

// TestValidMailbox: the loop accepts exactly what ^[A-Za-z0-9_-]{1,64}$
// does.
func TestValidMailbox(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	cases := []string{"", "MB1", "mb_1-x", strings.Repeat("a", 64), strings.Repeat("a", 65), "a.b", "a b", "a*", "a>",
		"é", "a\x00", "20261122100000000001_0a1b2c3d4e", "../x", "-", "_"}
	for c := range 256 {
		cases = append(cases, "x"+string(rune(c)), string([]byte{byte(c)}))
	}
	for _, c := range cases {
		if got, want := ValidMailbox(c), re.MatchString(c); got != want {
			t.Errorf("ValidMailbox(%q) = %v, want %v", c, got, want)
		}
	}
}
