package integration

import (
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// meshClient reads a built-in mailbox the way NHS's mesh_client does: v2,
// gzip, one nonce per session with the count incremented per request.
type meshClient struct {
	base, mailbox, password, key string
	nonce                        string
	count                        int
}

func newMeshClient(base, mailbox, password, key string) *meshClient {
	return &meshClient{base: base, mailbox: mailbox, password: password, key: key,
		nonce: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

func (c *meshClient) auth() string {
	c.count++
	ts := time.Now().UTC().Format("200601021504")
	mac := hmac.New(sha256.New, []byte(c.key))
	fmt.Fprintf(mac, "%s:%s:%d:%s:%s", c.mailbox, c.nonce, c.count, c.password, ts)
	return fmt.Sprintf("NHSMESH %s:%s:%d:%s:%s", c.mailbox, c.nonce, c.count, ts, hex.EncodeToString(mac.Sum(nil)))
}

func (c *meshClient) do(method, path string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, c.base+"/messageexchange/"+c.mailbox+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", c.auth())
	req.Header.Set("Accept", "application/vnd.mesh.v2+json")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Mex-ClientVersion", "integration")
	req.Header.Set("Mex-OSName", "linux")
	req.Header.Set("Mex-OSVersion", "6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, nil, err
		}
		if b, err = io.ReadAll(zr); err != nil {
			return nil, nil, err
		}
	}
	return resp, b, nil
}

// meshMessage is one retrieved message.
type meshMessage struct {
	id     string
	header http.Header
	body   []byte
}

// drain lists, retrieves (all chunks) and acknowledges everything in the
// inbox; it returns what it read.
func (c *meshClient) drain(t testing.TB) ([]meshMessage, error) {
	t.Helper()
	var out []meshMessage
	for {
		resp, b, err := c.do("GET", "/inbox?max_results=500")
		if err != nil {
			return out, err
		}
		if resp.StatusCode != 200 {
			return out, fmt.Errorf("inbox: %d %s", resp.StatusCode, b)
		}
		var page struct {
			Messages []string `json:"messages"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return out, err
		}
		if len(page.Messages) == 0 {
			return out, nil
		}
		for _, id := range page.Messages {
			resp, body, err := c.do("GET", "/inbox/"+id)
			if err != nil {
				return out, err
			}
			if resp.StatusCode != 200 && resp.StatusCode != 206 {
				return out, fmt.Errorf("retrieve %s: %d", id, resp.StatusCode)
			}
			total := 1
			if r := resp.Header.Get("Mex-Chunk-Range"); r != "" {
				_, n, _ := strings.Cut(r, ":")
				total, _ = strconv.Atoi(n)
			}
			for n := 2; n <= total; n++ {
				_, more, err := c.do("GET", fmt.Sprintf("/inbox/%s/%d", id, n))
				if err != nil {
					return out, err
				}
				body = append(body, more...)
			}
			out = append(out, meshMessage{id: id, header: resp.Header, body: body})
			if resp, _, err := c.do("PUT", "/inbox/"+id+"/status/acknowledged"); err != nil || resp.StatusCode != 200 {
				return out, fmt.Errorf("ack %s: %v", id, err)
			}
		}
	}
}

const hookSecret = "whsec_c2VjcmV0LWtleS0wMTIzNDU2Nzg5"

// verifyHook checks a Standard Webhooks signature.
func verifyHook(r *http.Request, body []byte) bool {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(hookSecret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

// hookRequest is one request a test receiver saw.
type hookRequest struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
	valid  bool
}

// hookReceiver records requests and answers what respond says.
type hookReceiver struct {
	mu      sync.Mutex
	reqs    []hookRequest
	respond func(n int) (int, string)
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	status, ra := 200, ""
	if h.respond != nil {
		status, ra = h.respond(len(h.reqs) + 1)
	}
	h.reqs = append(h.reqs, hookRequest{at: time.Now(), header: r.Header.Clone(), body: b, status: status, valid: verifyHook(r, b)})
	h.mu.Unlock()
	if ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	w.WriteHeader(status)
}

func (h *hookReceiver) all() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.reqs...)
}

func (h *hookReceiver) ok() []hookRequest {
	var out []hookRequest
	for _, r := range h.all() {
		if r.status < 300 {
			out = append(out, r)
		}
	}
	return out
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
