package integration

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

const (
	meshKey    = "BackBone"
	publisher  = "200000000118"
	subscriber = "200000000115"
	patient    = "9912003888" // the routing NHS number of PDS-Change-Of-GP-ems-example.xml
	otherNHS   = "9434765919"
)

// deliveryConfig registers a publisher, a subscriber owning four built-in
// mailboxes, and webhook settings a test on loopback needs; retry is the
// delivery.retry block.
func deliveryConfig(retry string) string {
	return `registry:
  asids:
    "` + publisher + `":
      ods: X26
      publish_events: [pds-change-of-gp-1]
    "` + subscriber + `":
      ods: SUB01
      mailboxes: [MBA01, MBB01, MBC01, MBD01]
delivery:
  mesh:
    shared_key: ` + meshKey + `
    mailboxes:
      MBA01: {password: pwa, ods: SUB01}
      MBB01: {password: pwb, ods: SUB01}
      MBC01: {password: pwc, ods: SUB01}
      MBD01: {password: pwd, ods: SUB01}
    chunk_size: 4KiB
  webhook:
    timeout: 1s
    allow_http: true
    allow_networks: [127.0.0.0/8]
    signing_secrets: ["whsec_bmV3LXNlY3JldA==", "` + hookSecret + `"]
  breaker:
    failures: 3
    cooldown: 500ms
    max_cooldown: 1s
` + retry
}

const fastRetry = `  retry:
    initial: 200ms
    max: 400ms
    multiplier: 2
    max_attempts: 4
    max_age: 1h
    retry_after_max: 5s
`

// subscribe creates an explicit subscription through the public API and
// returns its id.
func subscribe(t *testing.T, e *emsd, nhs, tag, channel, endpoint string, headers ...string) string {
	t.Helper()
	criteria := "/Bundle?type=message&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhs + "&MessageHeader.event=pds-change-of-gp-1"
	if tag != "" {
		criteria += "&tag=" + tag
	}
	ch := map[string]any{"type": channel, "endpoint": endpoint}
	if channel == "rest-hook" {
		ch["payload"] = "application/fhir+xml"
		if len(headers) > 0 {
			ch["header"] = headers
		}
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{"https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"}},
		"status":       "requested",
		"contact":      []any{map[string]any{"system": "url", "value": "https://directory.spineservices.nhs.uk/STU3/Organization/SUB01", "use": "work"}},
		"reason":       "delivery integration test",
		"criteria":     criteria,
		"channel":      ch,
	})
	resp, body := e.request(t, http.MethodPost, "/STU3/Subscription", string(b),
		map[string]string{"fromASID": subscriber, "Content-Type": "application/fhir+json"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create subscription: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	rest := loc[strings.Index(loc, "Subscription/")+len("Subscription/"):]
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// publishGP publishes the change-of-GP example with a fresh id, for nhs.
func publishGP(t testing.TB, base string, format fhir.Format, nhs string) (body []byte, id string, status int, err error) {
	raw, err := os.ReadFile("../testdata/nems-examples/PDS-Change-Of-GP-ems-example.xml")
	if err != nil {
		t.Fatal(err)
	}
	if nhs != patient {
		raw = bytes.ReplaceAll(raw, []byte(patient), []byte(nhs))
	}
	body, id, _ = withNewID(t.(*testing.T), raw, format)
	ct := "application/fhir+xml"
	if format == fhir.FormatJSON {
		ct = "application/fhir+json"
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/STU3/Events/1/$process-message", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("fromASID", publisher)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return body, id, 0, err
	}
	resp.Body.Close()
	return body, id, resp.StatusCode, nil
}

func mustPublish(t *testing.T, e *emsd, format fhir.Format, nhs string) ([]byte, string) {
	t.Helper()
	body, id, status, err := publishGP(t, e.baseURL(), format, nhs)
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("publish: %d %v\n%s", status, err, e.logText())
	}
	return body, id
}

// messageIDOf reads MessageHeader.id from a delivered bundle.
func messageIDOf(t testing.TB, body []byte) string {
	root, err := fhir.ParseXML(body, fhir.DefaultLimits())
	if err != nil {
		t.Fatalf("delivered body is not FHIR XML: %v", err)
	}
	return root.ChildrenNamed("entry")[0].Child("resource").Resource().Str("id")
}

func TestDeliveryEndToEnd(t *testing.T) {
	hook := &hookReceiver{}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	e := startEMSD(t, t.TempDir(), deliveryConfig(fastRetry))

	a1 := subscribe(t, e, patient, "team-a", "message", "MBA01")
	a2 := subscribe(t, e, patient, "team-b", "message", "MBA01")
	b1 := subscribe(t, e, patient, "only-tag", "message", "MBB01")
	subscribe(t, e, patient, "", "message", "MBB01")  // untagged beside a tagged one
	subscribe(t, e, patient, "", "message", "MBC01")  // untagged only
	subscribe(t, e, otherNHS, "", "message", "MBD01") // does not match
	subscribe(t, e, patient, "", "rest-hook", hookSrv.URL+"/ems", "X-Api-Key: k-123")

	xmlBody, xmlID := mustPublish(t, e, fhir.FormatXML, patient)
	jsonBody, jsonID := mustPublish(t, e, fhir.FormatJSON, patient)

	mb := map[string]*meshClient{}
	for name, pw := range map[string]string{"MBA01": "pwa", "MBB01": "pwb", "MBC01": "pwc", "MBD01": "pwd"} {
		mb[name] = newMeshClient(e.baseURL(), name, pw, meshKey)
	}
	got := map[string][]meshMessage{}
	eventually(t, 20*time.Second, "two messages in each matching mailbox and two webhook calls", func() bool {
		for _, name := range []string{"MBA01", "MBB01", "MBC01"} {
			msgs, err := mb[name].drain(t)
			if err != nil {
				t.Fatal(err)
			}
			got[name] = append(got[name], msgs...)
		}
		return len(got["MBA01"]) >= 2 && len(got["MBB01"]) >= 2 && len(got["MBC01"]) >= 2 && len(hook.ok()) >= 2
	})
	time.Sleep(500 * time.Millisecond) // room for any stray extra copy
	for _, name := range []string{"MBA01", "MBB01", "MBC01"} {
		more, err := mb[name].drain(t)
		if err != nil {
			t.Fatal(err)
		}
		got[name] = append(got[name], more...)
		if len(got[name]) != 2 {
			t.Fatalf("%s got %d messages, want exactly 2", name, len(got[name]))
		}
	}
	if msgs, _ := mb["MBD01"].drain(t); len(msgs) != 0 {
		t.Fatalf("non-matching mailbox got %d messages", len(msgs))
	}
	if n := len(hook.all()); n != 2 {
		t.Fatalf("webhook got %d requests, want 2", n)
	}

	sortedPair := func(x, xt, y, yt string) string {
		if x > y {
			x, xt, y, yt = y, yt, x, xt
		}
		return x + "|" + xt + "~~~" + y + "|" + yt
	}
	wantPartner := map[string]string{"MBA01": sortedPair(a1, "team-a", a2, "team-b"), "MBB01": b1 + "|only-tag", "MBC01": ""}
	for name, msgs := range got {
		for _, m := range msgs {
			h := m.header
			for k, v := range map[string]string{"Mex-WorkflowID": "CHANGEOFGP_1", "Mex-StatusEvent": "TRANSFER",
				"Mex-StatusSuccess": "SUCCESS", "Mex-MessageType": "DATA", "Mex-To": name, "Mex-MessageID": m.id} {
				if h.Get(k) != v {
					t.Errorf("%s: %s = %q, want %q", name, k, h.Get(k), v)
				}
			}
			if _, ok := h["Mex-Partnerid"]; wantPartner[name] == "" && ok {
				t.Errorf("%s: Mex-PartnerID present (%q) with no tagged match", name, h.Get("Mex-PartnerID"))
			}
			if got := h.Get("Mex-PartnerID"); got != wantPartner[name] {
				t.Errorf("%s: Mex-PartnerID %q, want %q", name, got, wantPartner[name])
			}
			switch messageIDOf(t, m.body) {
			case xmlID:
				if !bytes.Equal(m.body, xmlBody) {
					t.Errorf("%s: XML-published body not byte-identical", name)
				}
			case jsonID:
				back, err := fhir.ParseXML(m.body, fhir.DefaultLimits())
				if err != nil {
					t.Fatal(err)
				}
				if j, _ := fhir.Marshal(back, fhir.FormatJSON, false); !bytes.Equal(j, jsonBody) {
					t.Errorf("%s: JSON-published event lost content in the XML conversion", name)
				}
			default:
				t.Errorf("%s: unexpected event", name)
			}
		}
	}
	for _, r := range hook.all() {
		if !r.valid {
			t.Error("webhook signature does not verify")
		}
		if r.header.Get("X-Api-Key") != "k-123" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+xml") {
			t.Errorf("webhook headers %v", r.header)
		}
		if messageIDOf(t, r.body) == xmlID && !bytes.Equal(r.body, xmlBody) {
			t.Error("webhook body not byte-identical to the XML published")
		}
	}
}

func TestDeliveryRetryDeadLetterReplay(t *testing.T) {
	var fixed atomic.Bool
	flaky := &hookReceiver{respond: func(n int) (int, string) {
		if n <= 3 {
			return 503, ""
		}
		return 200, ""
	}}
	broken := &hookReceiver{respond: func(int) (int, string) {
		if fixed.Load() {
			return 204, ""
		}
		return 500, ""
	}}
	slow := &hookReceiver{respond: func(n int) (int, string) {
		if n == 1 {
			return 429, "2"
		}
		return 200, ""
	}}
	var servers []*httptest.Server
	for _, h := range []*hookReceiver{flaky, broken, slow} {
		s := httptest.NewServer(h)
		defer s.Close()
		servers = append(servers, s)
	}
	e := startEMSD(t, t.TempDir(), deliveryConfig(fastRetry))
	for _, s := range servers {
		subscribe(t, e, patient, "", "rest-hook", s.URL)
	}
	_, id := mustPublish(t, e, fhir.FormatXML, patient)

	eventually(t, 20*time.Second, "flaky endpoint delivered after 3 failures", func() bool { return len(flaky.ok()) == 1 })
	reqs := flaky.all()
	if len(reqs) != 4 {
		t.Fatalf("flaky: %d requests, want 4", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		gap := reqs[i].at.Sub(reqs[i-1].at)
		// Schedule: full jitter under 200 ms, 400 ms, 400 ms ceilings.
		if gap > 1500*time.Millisecond {
			t.Errorf("flaky retry %d after %v: beyond the schedule", i, gap)
		}
		if reqs[i].header.Get("webhook-id") != reqs[0].header.Get("webhook-id") {
			t.Error("retries must keep the webhook-id")
		}
	}
	eventually(t, 20*time.Second, "Retry-After honoured", func() bool { return len(slow.ok()) == 1 })
	if s := slow.all(); s[1].at.Sub(s[0].at) < 1900*time.Millisecond {
		t.Errorf("Retry-After: 2 not honoured: retried after %v", s[1].at.Sub(s[0].at))
	}

	var dead []map[string]any
	eventually(t, 20*time.Second, "dead letter for the broken endpoint", func() bool {
		_, body := e.admin(t, http.MethodGet, "/admin/v1/dead-letters?event="+id, "")
		var resp struct {
			DeadLetters []map[string]any `json:"deadLetters"`
		}
		_ = json.Unmarshal([]byte(body), &resp)
		dead = resp.DeadLetters
		return len(dead) == 1
	})
	if dead[0]["reason"] != "exhausted" || dead[0]["lastStatus"] != float64(500) || dead[0]["attempts"] != float64(4) {
		t.Fatalf("dead letter %v", dead[0])
	}
	if n := len(broken.all()); n != 4 {
		t.Fatalf("broken endpoint: %d attempts, want max_attempts 4", n)
	}
	fixed.Store(true)
	resp, body := e.admin(t, http.MethodPost, "/admin/v1/dead-letters/replay?job="+dead[0]["jobId"].(string), "")
	if resp.StatusCode != 200 {
		t.Fatalf("replay: %d %s", resp.StatusCode, body)
	}
	eventually(t, 20*time.Second, "replayed delivery", func() bool { return len(broken.ok()) == 1 })
	// The log is written once the response is in: poll for it.
	eventually(t, 10*time.Second, "the delivery log to show the replayed delivery", func() bool {
		_, body = e.admin(t, http.MethodGet, "/admin/v1/deliveries/"+dead[0]["jobId"].(string), "")
		var rec struct {
			State    string `json:"state"`
			Attempts []struct {
				Status int `json:"status"`
			} `json:"attempts"`
		}
		_ = json.Unmarshal([]byte(body), &rec)
		return rec.State == "delivered" && len(rec.Attempts) == 5 && rec.Attempts[4].Status == 204
	})
}

// healthyLatency publishes n events and returns the median publish→webhook
// latency of the healthy endpoint.
func healthyLatency(t *testing.T, withDead bool, n int) time.Duration {
	healthy := &hookReceiver{}
	hs := httptest.NewServer(healthy)
	defer hs.Close()
	stop := make(chan struct{})
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hangs past the webhook timeout
		case <-time.After(3 * time.Second):
		case <-stop:
		}
		w.WriteHeader(503)
	}))
	defer dead.Close()
	defer close(stop)
	e := startEMSD(t, t.TempDir(), deliveryConfig(`  retry:
    initial: 100ms
    max: 500ms
    multiplier: 2
    max_attempts: 100
    max_age: 1h
    retry_after_max: 1s
`))
	subscribe(t, e, patient, "", "rest-hook", hs.URL)
	if withDead {
		subscribe(t, e, patient, "", "rest-hook", dead.URL)
	}
	sent := map[string]time.Time{}
	for range n {
		_, id := mustPublish(t, e, fhir.FormatXML, patient)
		sent[id] = time.Now()
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, 60*time.Second, "healthy deliveries", func() bool { return len(healthy.ok()) >= n })
	var lat []time.Duration
	for _, r := range healthy.ok() {
		lat = append(lat, r.at.Sub(sent[r.header.Get("X-Event-Message-Id")]))
	}
	e.stop()
	// The median: on a shared machine a few scheduling stalls would
	// dominate a mean.
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2]
}

func TestDeliveryDeadEndpointDoesNotDelayHealthy(t *testing.T) {
	const n = 30
	alone := healthyLatency(t, false, n)
	beside := healthyLatency(t, true, n)
	ratio := float64(beside) / float64(alone)
	t.Logf("healthy endpoint median latency: %v alone, %v beside a dead endpoint (ratio %.2f)", alone, beside, ratio)
	// Same patient on both endpoints: ordering is per endpoint, so the dead
	// one's stuck events must not hold the healthy one's.
	if beside > alone+time.Second {
		t.Fatalf("dead endpoint delays the healthy one: %v vs %v", beside, alone)
	}
}

// TestDeliveryNoLoss publishes while emsd is SIGKILLed and restarted, then
// checks that every accepted event reached the mailbox and the webhook.
// EMS_NOLOSS_EVENTS scales it (the issue asks for ≥ 5000; CI runs fewer).
func TestDeliveryNoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts emsd")
	}
	n := 600
	if s := os.Getenv("EMS_NOLOSS_EVENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const minKills = 5
	kills := 0
	hook := &hookReceiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	e := startEMSD(t, t.TempDir(), deliveryConfig(`  retry:
    initial: 100ms
    max: 1s
    multiplier: 2
    max_attempts: 1000
    max_age: 1h
    retry_after_max: 1s
`))
	subscribe(t, e, patient, "", "message", "MBA01")
	subscribe(t, e, patient, "", "rest-hook", hs.URL)

	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		done     = make(chan struct{})
		baseMu   sync.RWMutex
		base     = e.baseURL()
	)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		next := make(chan int)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					// Retry until accepted: a 202 is the promise under test.
					for {
						baseMu.RLock()
						b := base
						baseMu.RUnlock()
						_, id, status, err := publishGP(t, b, fhir.FormatXML, patient)
						if err == nil && status == http.StatusAccepted {
							mu.Lock()
							accepted[id] = true
							mu.Unlock()
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			}()
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	restart := func() {
		e.kill()
		e.start()
		baseMu.Lock()
		base = e.baseURL()
		baseMu.Unlock()
		kills++
	}
	// Kill at random moments while publishing, then during delivery until
	// at least minKills restarts have happened.
publishing:
	for {
		select {
		case <-done:
			break publishing
		case <-time.After(time.Duration(300+rnd.IntN(1200)) * time.Millisecond):
			restart()
		}
	}
	for kills < minKills {
		time.Sleep(time.Duration(100+rnd.IntN(700)) * time.Millisecond)
		restart()
	}
	mu.Lock()
	t.Logf("%d events accepted across %d SIGKILL restarts", len(accepted), kills)
	mu.Unlock()

	client := newMeshClient(e.baseURL(), "MBA01", "pwa", meshKey)
	perEvent := map[string]int{}
	idsOf := map[string]map[string]bool{}
	eventually(t, 5*time.Minute, "every accepted event in the mailbox and at the webhook", func() bool {
		msgs, err := client.drain(t)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ev := messageIDOf(t, m.body)
			perEvent[ev]++
			if idsOf[ev] == nil {
				idsOf[ev] = map[string]bool{}
			}
			idsOf[ev][m.id] = true
		}
		hooked := map[string]bool{}
		for _, r := range hook.ok() {
			hooked[r.header.Get("X-Event-Message-Id")] = true
		}
		for id := range accepted {
			if perEvent[id] == 0 || !hooked[id] {
				return false
			}
		}
		return true
	})
	meshDup := 0
	for ev, c := range perEvent {
		meshDup += c - 1
		if len(idsOf[ev]) != 1 {
			t.Errorf("event %s delivered to the mailbox under %d different message ids", ev, len(idsOf[ev]))
		}
	}
	hookDup, hookIDs := 0, map[string]map[string]bool{}
	for _, r := range hook.ok() {
		ev := r.header.Get("X-Event-Message-Id")
		if hookIDs[ev] == nil {
			hookIDs[ev] = map[string]bool{}
		} else {
			hookDup++
		}
		hookIDs[ev][r.header.Get("webhook-id")] = true
	}
	for ev, ids := range hookIDs {
		if len(ids) != 1 {
			keys := make([]string, 0, len(ids))
			for k := range ids {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			t.Errorf("event %s reached the webhook under different ids %v", ev, keys)
		}
	}
	t.Logf("no-loss: %d accepted, all delivered; duplicates: mailbox %d, webhook %d (each with the same delivery id)",
		len(accepted), meshDup, hookDup)
	if limit := len(accepted)/10 + 50; hookDup > limit || meshDup > limit {
		t.Fatalf("duplicates not bounded: mailbox %d, webhook %d", meshDup, hookDup)
	}
}
