package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/fhir"
)

// natsCluster is three nats-servers clustered on loopback, each a child
// process of the test (the nats-server main of the pinned module, built
// once), so that a failure test can SIGKILL one: no graceful shutdown, no
// leadership handed over, whatever was not yet on disk is gone.
type natsCluster struct {
	t     *testing.T
	ports []int
	confs []string
	procs []*natsProc
}

type natsProc struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// natsServerBinary builds github.com/nats-io/nats-server/v2 at the version
// go.mod pins (its main imports only the server package we already use).
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		natsServerBin = filepath.Join(binDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("building nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	natsServerBinary(t)
	c := &natsCluster{t: t}
	var routes []string
	var clusterPorts []int
	for range 3 {
		p := freePort(t)
		clusterPorts = append(clusterPorts, p)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	dir := t.TempDir()
	for i := range 3 {
		port := freePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		text := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\n"+
			"jetstream { store_dir: %q }\n"+
			"cluster { name: ems-test, listen: 127.0.0.1:%d, routes: [%s] }\n",
			i, port, filepath.Join(dir, fmt.Sprintf("n%d", i)), clusterPorts[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ports = append(c.ports, port)
		c.confs = append(c.confs, conf)
		c.procs = append(c.procs, nil)
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.procs {
			c.kill(i)
		}
	})
	c.waitJetStream()
	return c
}

// start runs server i on its configuration (and store) and waits until
// it accepts connections.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	out := &bytes.Buffer{}
	cmd := exec.Command(natsServerBinary(c.t), "-c", c.confs[i])
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &natsProc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	c.procs[i] = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.ports[i]), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-p.exited:
			c.t.Fatalf("nats n%d exited at start:\n%s", i, out.String())
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats n%d not accepting connections: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill SIGKILLs server i: a crash, not a shutdown.
func (c *natsCluster) kill(i int) {
	if p := c.procs[i]; p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		c.procs[i] = nil
	}
}

func (c *natsCluster) urls() []string {
	var out []string
	for _, p := range c.ports {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return out
}

func (c *natsCluster) connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(strings.Join(c.urls(), ","), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitJetStream waits for the meta leader: until then stream creation
// fails, and emsd would exit at startup.
func (c *natsCluster) waitJetStream() {
	js := c.connect(c.t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: 3})
		if err == nil {
			_ = js.DeleteStream(ctx, "PROBE")
			cancel()
			return
		}
		cancel()
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterNodeConfig is an emsd config in cluster mode on c.
func clusterNodeConfig(c *natsCluster, node string, snapshotEvery int, retry string) string {
	return "nats:\n  urls: [" + strings.Join(c.urls(), ", ") + "]\n" +
		"cluster:\n  enabled: true\n  node_name: " + node + "\n  replicas: 3\n  snapshot_every: " + strconv.Itoa(snapshotEvery) + "\n" +
		"admin:\n  tokens:\n    - name: integration\n      token: " + adminToken + "\n" +
		deliveryConfig(retry)
}

func startClusterEMSD(t *testing.T, c *natsCluster, node string, snapshotEvery int, retry string) *emsd {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "emsd.yaml"), []byte(clusterNodeConfig(c, node, snapshotEvery, retry)), 0o600); err != nil {
		t.Fatal(err)
	}
	return startEMSD(t, dir, "")
}

// nodeSet holds the current base URLs of the emsd nodes; a restarted
// node listens on a new port.
type nodeSet struct {
	mu    sync.RWMutex
	bases []string
}

func (n *nodeSet) set(i int, base string) { n.mu.Lock(); n.bases[i] = base; n.mu.Unlock() }
func (n *nodeSet) get(i int) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.bases[i%len(n.bases)]
}

// createSubscription posts an explicit subscription and returns its id;
// it never fails the test (nodes die under it).
func createSubscription(base, nhs, channel, endpoint string) (string, int, error) {
	ch := map[string]any{"type": channel, "endpoint": endpoint}
	if channel == "rest-hook" {
		ch["payload"] = "application/fhir+xml"
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Subscription",
		"status":       "requested",
		"contact":      []any{map[string]any{"system": "url", "value": "https://directory.spineservices.nhs.uk/STU3/Organization/SUB01", "use": "work"}},
		"reason":       "cluster integration test",
		"criteria":     "/Bundle?type=message&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhs + "&MessageHeader.event=pds-change-of-gp-1",
		"channel":      ch,
	})
	req, _ := http.NewRequest(http.MethodPost, base+"/STU3/Subscription", strings.NewReader(string(b)))
	req.Header.Set("fromASID", subscriber)
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", resp.StatusCode, fmt.Errorf("%d %s", resp.StatusCode, truncate(string(body), 300))
	}
	loc := resp.Header.Get("Location")
	rest := loc[strings.Index(loc, "Subscription/")+len("Subscription/"):]
	id, _, _ := strings.Cut(rest, "/")
	return id, resp.StatusCode, nil
}

// readSubscription is the status of GET Subscription/id on one node.
func readSubscription(base, id string) int {
	req, _ := http.NewRequest(http.MethodGet, base+"/STU3/Subscription/"+id, nil)
	req.Header.Set("fromASID", subscriber)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// nhsNumber is the n-th Mod-11-valid NHS number from a base.
func nhsNumber(n int) string {
	for ; ; n++ {
		s := fmt.Sprintf("9%08d", n%100_000_000)
		sum := 0
		for i := 0; i < 9; i++ {
			sum += int(s[i]-'0') * (10 - i)
		}
		check := 11 - sum%11
		if check == 11 {
			check = 0
		}
		if check != 10 {
			return s + strconv.Itoa(check)
		}
	}
}

// clusterStatusOf reads the cluster part of a node's status page.
type clusterStatusView struct {
	Cluster struct {
		Node      string `json:"node"`
		ChangeLog struct {
			LastSeq uint64 `json:"lastSeq"`
		} `json:"changeLog"`
		Nodes []struct {
			Name    string `json:"name"`
			Applied uint64 `json:"applied"`
			Lag     uint64 `json:"lag"`
		} `json:"nodes"`
		Streams []struct {
			Name     string `json:"name"`
			Leader   string `json:"leader"`
			Replicas []struct {
				Name    string `json:"name"`
				Current bool   `json:"current"`
			} `json:"replicas"`
		} `json:"streams"`
	} `json:"cluster"`
}

func clusterStatusOf(t *testing.T, e *emsd) (clusterStatusView, string) {
	t.Helper()
	resp, body := e.admin(t, http.MethodGet, "/admin/v1/status", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	var v clusterStatusView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v, body
}

// TestClusterSurvivesNodeLoss runs two emsd nodes on a three-server NATS
// cluster: a subscription created on one is read and matched on the
// other; under publish and subscription load one NATS server and then one
// emsd node are SIGKILLed and restarted; afterwards every accepted event
// has reached its webhook and mailbox at least once, first in publish
// order at the webhook (the patient's jobs move between the nodes' lanes
// when b dies and comes back), and every acknowledged subscription write
// is on both nodes.
func TestClusterSurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-server NATS cluster and kills nodes")
	}
	events := 200 // at least; load runs until the failures are over
	if s := os.Getenv("EMS_CLUSTER_EVENTS"); s != "" {
		events, _ = strconv.Atoi(s)
	}
	nc := startNATSCluster(t)
	retry := "  retry:\n    initial: 100ms\n    max: 1s\n    multiplier: 2\n    max_attempts: 1000\n    max_age: 1h\n    retry_after_max: 1s\n"
	a := startClusterEMSD(t, nc, "a", 100, retry)
	b := startClusterEMSD(t, nc, "b", 100, retry)
	hook := &hookReceiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()

	// Created on A, read and matched on B.
	hookSub := subscribe(t, a, patient, "", "rest-hook", hs.URL)
	if st := readSubscription(b.baseURL(), hookSub); st != 200 {
		eventually(t, 5*time.Second, "A's subscription readable on B", func() bool { return readSubscription(b.baseURL(), hookSub) == 200 })
	}
	subscribe(t, b, patient, "", "message", "MBA01")
	_, first := mustPublish(t, b, fhir.FormatXML, patient)
	eventually(t, 30*time.Second, "the first event at the webhook", func() bool {
		for _, r := range hook.ok() {
			if r.header.Get("X-Event-Message-Id") == first {
				return true
			}
		}
		return false
	})

	nodes := &nodeSet{bases: []string{a.baseURL(), b.baseURL()}}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{first: true}
		subsOK   = map[string]bool{hookSub: true}
		subFail  int
		done     = make(chan struct{})
	)
	// Load runs through the whole sequence of failures: 4 publishers,
	// each retrying an event on the next node until it is accepted (a 202
	// is the promise under test), and one subscription writer.
	stop := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := w
				for n := 0; ; n++ {
					select {
					case <-stop:
						if n*4 >= events {
							return
						}
					default:
					}
					for {
						k++
						_, id, status, err := publishGP(t, nodes.get(k), fhir.FormatXML, patient)
						if err == nil && status == http.StatusAccepted {
							mu.Lock()
							accepted[id] = true
							mu.Unlock()
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}()
	subsDone := make(chan struct{})
	go func() {
		defer close(subsDone)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			id, _, err := createSubscription(nodes.get(i), nhsNumber(i*7), "message", "MBB01")
			mu.Lock()
			if err == nil {
				subsOK[id] = true
			} else {
				subFail++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	time.Sleep(time.Second)
	t.Log("killing NATS server n1 (SIGKILL)")
	nc.kill(1)
	time.Sleep(3 * time.Second)
	nc.start(1)
	t.Log("NATS server n1 restarted")
	time.Sleep(2 * time.Second)
	// The node working the webhook's lane dies with the patient's jobs
	// in hand; it stays down past the lease TTL (10 s) so that the other
	// node takes the lane over, then comes back and takes it back.
	victim, vi := b, 1
	if owner := laneOwner(t, nc.connect(t), hs.URL); owner == "a" {
		victim, vi = a, 0
	}
	t.Logf("killing emsd %s (SIGKILL), which works the webhook's lane", []string{"a", "b"}[vi])
	victim.kill()
	time.Sleep(12 * time.Second)
	if owner := laneOwner(t, nc.connect(t), hs.URL); owner == []string{"a", "b"}[vi] {
		t.Errorf("the webhook's lane is still held by the dead node %s 12 s after it was killed", owner)
	} else {
		t.Logf("the webhook's lane taken over by %s", owner)
	}
	victim.start()
	nodes.set(vi, victim.baseURL())
	t.Log("restarted")
	time.Sleep(5 * time.Second)
	close(stop)
	<-done
	<-subsDone

	mu.Lock()
	t.Logf("%d events accepted, %d subscription writes acknowledged (%d refused or failed while nodes were down)", len(accepted), len(subsOK), subFail)
	mu.Unlock()

	client := newMeshClient(a.baseURL(), "MBA01", "pwa", meshKey)
	perEvent := map[string]int{}
	var missMesh, missHook int
	delivered := func() bool {
		msgs, err := client.drain(t)
		if err != nil {
			t.Logf("drain: %v", err)
			return false
		}
		for _, m := range msgs {
			perEvent[messageIDOf(t, m.body)]++
		}
		hooked := map[string]bool{}
		for _, r := range hook.ok() {
			hooked[r.header.Get("X-Event-Message-Id")] = true
		}
		missMesh, missHook = 0, 0
		for id := range accepted {
			if perEvent[id] == 0 {
				missMesh++
			}
			if !hooked[id] {
				missHook++
			}
		}
		return missMesh == 0 && missHook == 0
	}
	// Every accepted event must reach both the mailbox and the webhook.
	// All events are for one patient, so the webhook's are one strictly
	// serial chain (per-patient order): 15-30 deliveries/s here, under
	// -race, on cores shared with five servers.
	loadEnded := time.Now()
	lastReport := loadEnded
	for deadline := time.Now().Add(3 * time.Minute); !delivered(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			_, body := a.admin(t, http.MethodGet, "/admin/v1/status", "")
			t.Fatalf("after 3 minutes %d accepted events are not in the mailbox and %d not at the webhook\nstatus of a: %s\nlogs of b:\n%s",
				missMesh, missHook, body, lastLines(b.logText(), 40))
		}
		if time.Since(lastReport) > 15*time.Second {
			t.Logf("%.0f s after the load: %d events not yet in the mailbox, %d not yet at the webhook",
				time.Since(loadEnded).Seconds(), missMesh, missHook)
			lastReport = time.Now()
		}
	}
	t.Logf("every accepted event delivered %.1f s after the load ended", time.Since(loadEnded).Seconds())
	hookCount := map[string]int{}
	for _, r := range hook.ok() {
		hookCount[r.header.Get("X-Event-Message-Id")]++
	}
	meshDup, hookDup := 0, 0
	for id := range accepted {
		meshDup += perEvent[id] - 1
		hookDup += max(hookCount[id]-1, 0)
	}
	t.Logf("duplicates: %d in the mailbox, %d at the webhook (of %d events each)", meshDup, hookDup, len(accepted))

	// Per-patient order at the webhook: every event for the patient (all
	// of them here) first arrives after every earlier one, in the order
	// of the events stream, whichever node sent it.
	seqOf := eventSeqs(t, nc.connect(t), "EMS_EVENTS")
	var highest uint64
	seen := map[string]bool{}
	var outOfOrder, replays int
	for _, r := range hook.ok() {
		id := r.header.Get("X-Event-Message-Id")
		seq, ok := seqOf[id]
		if !ok {
			t.Errorf("webhook got event %s, not in the events stream", id)
			continue
		}
		if seen[id] {
			if seq < highest {
				replays++ // a duplicate of an event after a later one
			}
			continue
		}
		seen[id] = true
		if seq < highest {
			if outOfOrder < 5 {
				t.Errorf("event %s (seq %d) first reached the webhook after seq %d", id, seq, highest)
			}
			outOfOrder++
		}
		highest = max(highest, seq)
	}
	t.Logf("webhook order: %d events out of order, %d duplicates replayed after a later event", outOfOrder, replays)
	for _, e := range []*emsd{a, b} {
		logs := e.logText()
		t.Logf("%s logged: %d lanes taken, %d released, %d acks of finished jobs retried", e.readyField("http"),
			strings.Count(logs, "lanes: lane taken"), strings.Count(logs, "lanes: lane released"),
			strings.Count(logs, "acknowledging a finished job"))
	}
	// At-least-once across a crash redelivers what was in flight, not
	// the whole stream.
	if limit := len(accepted) / 4; meshDup > limit || hookDup > limit {
		t.Errorf("duplicates beyond a quarter of the events: mailbox %d, webhook %d", meshDup, hookDup)
	}

	// Every acknowledged subscription write is on both nodes.
	for _, e := range []*emsd{a, b} {
		missing := 0
		for id := range subsOK {
			if readSubscription(e.baseURL(), id) != 200 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d acknowledged subscriptions missing on %s", missing, len(subsOK), e.baseURL())
		}
	}
	var st clusterStatusView
	eventually(t, 20*time.Second, "both nodes announced with no lag", func() bool {
		st, _ = clusterStatusOf(t, a)
		if len(st.Cluster.Nodes) != 2 {
			return false
		}
		for _, n := range st.Cluster.Nodes {
			if n.Lag != 0 {
				return false
			}
		}
		return true
	})
	t.Logf("status: change log at %d; nodes %+v", st.Cluster.ChangeLog.LastSeq, st.Cluster.Nodes)
	for _, s := range st.Cluster.Streams {
		if len(s.Replicas) != 3 {
			t.Errorf("stream %s has %d replicas, want 3", s.Name, len(s.Replicas))
		}
	}
}

// laneOwner is the node holding the lease of the webhook endpoint's lane.
// NATS may be electing leaders (a server was just killed): it retries.
func laneOwner(t *testing.T, js jetstream.JetStream, endpoint string) string {
	t.Helper()
	var owner string
	eventually(t, 30*time.Second, "the webhook's lane held", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, delivery.DefaultLanesBucket)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, "lane."+strconv.Itoa(delivery.LaneOf("rest-hook", endpoint)))
		if err != nil {
			return false
		}
		owner, _, _ = strings.Cut(string(e.Value()), " ")
		return true
	})
	return owner
}

// eventSeqs maps every event id in the events stream to its sequence.
func eventSeqs(t *testing.T, js jetstream.JetStream, stream string) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := s.CachedInfo().State.Msgs
	out := map[string]uint64{}
	// An ordered consumer resets itself when it sees a gap or a stall, and
	// on a loaded machine one fetch can come back empty while it does:
	// give up only after several empty fetches in a row.
	for empty := 0; uint64(len(out)) < want; {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			md, _ := m.Metadata()
			out[m.Headers().Get(fhir.HeaderMessageID)] = md.Sequence.Stream
			n++
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty == 4 {
			t.Fatalf("read %d of %d events", len(out), want)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
