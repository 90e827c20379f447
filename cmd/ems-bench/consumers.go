package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// meshConsumers drain the built-in mailboxes the way MESH clients do (list,
// retrieve every chunk, acknowledge), with NHSMESH HMAC authentication.
// Ten thousand clients polling on a timer would spend the two cores on
// empty polls, so a mailbox is polled only while the load generator knows
// a delivery to it is outstanding: the publisher marks it, a consumer
// drains it and polls again every poll interval until nothing is
// outstanding.
type meshConsumers struct {
	base     string
	pop      *population
	tr       *tracker
	client   *http.Client
	state    []mailboxState
	queue    chan int
	errors   atomic.Int64
	firstErr atomic.Value
	// requests times every MESH API call: the consumers' view of the
	// inbox API.
	requests histogram
	polls    atomic.Int64 // inbox lists
	// byKind splits the requests: inbox list, retrieve, acknowledge.
	byKind [3]histogram
	poll   time.Duration
}

const (
	reqList = iota
	reqRetrieve
	reqAck
)

type mailboxState struct {
	pending atomic.Int64 // deliveries expected but not yet read
	queued  atomic.Bool  // in the queue or being drained
	nonce   string
	count   int
	empty   int // consecutive empty lists, for the poll back-off
}

// maxPollBackoff caps the back-off of a mailbox whose expected delivery
// has not arrived: when fan-out lags, thousands of mailboxes are waiting,
// and polling each every --mesh-poll spent the server's CPU on empty
// inbox scans instead of on the fan-out they were waiting for.
const maxPollBackoff = time.Second

func startMeshConsumers(ctx context.Context, base string, pop *population, tr *tracker, n int, poll time.Duration) *meshConsumers {
	m := &meshConsumers{base: base, pop: pop, tr: tr, client: newClient(n), poll: poll,
		state: make([]mailboxState, pop.mailboxes), queue: make(chan int, pop.mailboxes)}
	for i := range m.state {
		m.state[i].nonce = strconv.FormatInt(time.Now().UnixNano()+int64(i), 36)
	}
	for range n {
		go m.run(ctx)
	}
	return m
}

// expect notes that a delivery to mailbox e is on its way.
func (m *meshConsumers) expect(e int) {
	st := &m.state[e]
	st.pending.Add(1)
	m.wake(e)
}

func (m *meshConsumers) wake(e int) {
	if m.state[e].queued.CompareAndSwap(false, true) {
		m.queue <- e
	}
}

func (m *meshConsumers) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-m.queue:
			got, err := m.drain(ctx, e)
			if err != nil && ctx.Err() == nil {
				m.errors.Add(1)
				m.firstErr.CompareAndSwap(nil, err.Error())
			}
			st := &m.state[e]
			if got > 0 {
				st.empty = 0
			} else {
				st.empty = min(st.empty+1, 16)
			}
			delay := min(m.poll<<max(st.empty-1, 0), maxPollBackoff)
			st.queued.Store(false)
			if st.pending.Load() > 0 {
				if got > 0 {
					m.wake(e)
				} else {
					time.AfterFunc(delay, func() { m.wake(e) })
				}
			}
		}
	}
}

func (m *meshConsumers) do(ctx context.Context, e int, kind int, method, path string) (*http.Response, []byte, error) {
	st := &m.state[e]
	mb := m.pop.mailboxName(e)
	st.count++
	ts := time.Now().UTC().Format("200601021504")
	mac := hmac.New(sha256.New, []byte(meshKey))
	fmt.Fprintf(mac, "%s:%s:%d:%s:%s", mb, st.nonce, st.count, meshPassword, ts)
	req, err := http.NewRequestWithContext(ctx, method, m.base+"/messageexchange/"+mb+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", fmt.Sprintf("NHSMESH %s:%s:%d:%s:%s", mb, st.nonce, st.count, ts, hex.EncodeToString(mac.Sum(nil))))
	req.Header.Set("Accept", "application/vnd.mesh.v2+json")
	req.Header.Set("Mex-ClientVersion", "ems-bench")
	req.Header.Set("Mex-OSName", "linux")
	req.Header.Set("Mex-OSVersion", "6")
	started := time.Now()
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	took := time.Since(started)
	m.requests.record(took)
	m.byKind[kind].record(took)
	return resp, b, err
}

// drain reads and acknowledges everything in mailbox e.
func (m *meshConsumers) drain(ctx context.Context, e int) (int, error) {
	m.polls.Add(1)
	resp, b, err := m.do(ctx, e, reqList, "GET", "/inbox?max_results=500")
	if err != nil {
		return 0, fmt.Errorf("MESH inbox: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("MESH inbox %s: HTTP %d %.200s", m.pop.mailboxName(e), resp.StatusCode, b)
	}
	var page struct {
		Messages []string `json:"messages"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return 0, fmt.Errorf("MESH inbox: %w", err)
	}
	for _, id := range page.Messages {
		resp, body, err := m.do(ctx, e, reqRetrieve, "GET", "/inbox/"+id)
		if err != nil {
			return 0, fmt.Errorf("MESH retrieve: %w", err)
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
			return 0, fmt.Errorf("MESH retrieve %s: HTTP %d", id, resp.StatusCode)
		}
		if r := resp.Header.Get("Mex-Chunk-Range"); r != "" {
			_, n, _ := strings.Cut(r, ":")
			total, _ := strconv.Atoi(n)
			for c := 2; c <= total; c++ {
				_, more, err := m.do(ctx, e, reqRetrieve, "GET", fmt.Sprintf("/inbox/%s/%d", id, c))
				if err != nil {
					return 0, fmt.Errorf("MESH chunk: %w", err)
				}
				body = append(body, more...)
			}
		}
		resp, b, err := m.do(ctx, e, reqAck, "PUT", "/inbox/"+id+"/status/acknowledged")
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("MESH acknowledge %s: %v %.200s", id, err, b)
		}
		seq, ok := m.tr.ids.seqOf(body)
		m.tr.delivered(seq, ok)
		m.state[e].pending.Add(-1)
	}
	return len(page.Messages), nil
}

// hookReceiver is the benchmark's webhook endpoint: it checks the
// Standard Webhooks signature and answers 200.
type hookReceiver struct {
	tr       *tracker
	key      []byte
	srv      *http.Server
	addr     string
	invalid  atomic.Int64
	received atomic.Int64
	mu       sync.Mutex
}

func startHookReceiver(addr string) (*hookReceiver, error) {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(hookSecret, "whsec_"))
	h := &hookReceiver{key: key}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	h.addr = "http://" + l.Addr().String()
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	return h, nil
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	valid := false
	for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
		valid = valid || hmac.Equal([]byte(s), []byte(want))
	}
	if !valid {
		h.invalid.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.received.Add(1)
	if tr := h.tracker(); tr != nil {
		seq, ok := tr.ids.seqOf([]byte(r.Header.Get("X-Event-Message-Id")))
		tr.delivered(seq, ok)
	}
	w.WriteHeader(http.StatusOK)
}

func (h *hookReceiver) tracker() *tracker {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tr
}

func (h *hookReceiver) setTracker(tr *tracker) {
	h.mu.Lock()
	h.tr = tr
	h.mu.Unlock()
}
