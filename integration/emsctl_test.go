package integration

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// emsctlConfig is the delivery test's registry and fast retries, with every
// subscription waiting for an operator's approval.
func emsctlConfig() string {
	return deliveryConfig(fastRetry) + `subscriptions:
  auto_activate:
    - {ods: NOBODY, kind: "*"}
`
}

// subscriptionFile writes an explicit subscription for patient's change of
// GP to a file, as an operator would have it to hand.
func subscriptionFile(t *testing.T, dir, name, channel, endpoint string) string {
	t.Helper()
	ch := map[string]any{"type": channel, "endpoint": endpoint}
	if channel == "rest-hook" {
		ch["payload"] = "application/fhir+xml"
	}
	b, _ := json.MarshalIndent(map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{"https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"}},
		"status":       "requested",
		"contact":      []any{map[string]any{"system": "url", "value": "https://directory.spineservices.nhs.uk/STU3/Organization/SUB01", "use": "work"}},
		"reason":       "emsctl integration test",
		"criteria":     "/Bundle?type=message&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + patient + "&MessageHeader.event=pds-change-of-gp-1",
		"channel":      ch,
	}, "", "  ")
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventFile writes the change-of-GP example with a fresh MessageHeader.id.
func eventFile(t *testing.T, dir string) (string, string) {
	t.Helper()
	body, id, _ := withNewID(t, fixture(t, "nems-examples/PDS-Change-Of-GP-ems-example.xml"), fhir.FormatXML)
	p := filepath.Join(dir, "change-of-gp.xml")
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, id
}

// firstField returns the first column of the table's first data row.
func firstField(t *testing.T, table string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 {
		t.Fatalf("no rows in:\n%s", table)
	}
	return strings.Fields(lines[1])[0]
}

// rowsWith keeps the header and the rows containing s.
func rowsWith(table, s string) string {
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	out := lines[:1]
	for _, l := range lines[1:] {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// sortedRows keeps the header first and sorts the rows: list order is by
// id, which is random.
func sortedRows(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	sort.Strings(lines[1:])
	return strings.Join(lines, "\n") + "\n"
}

// TestEmsctl is the operator's walkthrough against one running emsd:
// review and approve subscriptions, publish, find why a delivery failed,
// replay it, and read the audit log; every command in table and JSON form
// and with its failure exit codes.
func TestEmsctl(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	hook := &hookReceiver{respond: func(int) (int, string) {
		if failing.Load() {
			return 500, ""
		}
		return 200, ""
	}}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	hookURL := hookSrv.URL + "/ems"

	e := startEMSD(t, t.TempDir(), emsctlConfig())
	c := newCtl(t, e)
	dir := t.TempDir()
	n := &normaliser{}

	// Create: both wait for review.
	hookSub := firstField(t, c.ok("subscription", "create", "-f", subscriptionFile(t, dir, "hook.json", "rest-hook", hookURL), "--asid", subscriber))
	n.ids = map[string]string{hookSub: "<SUB-HOOK>"}
	out := c.ok("subscription", "create", "-f", subscriptionFile(t, dir, "mesh.json", "message", "MBA01"), "--asid", subscriber)
	meshSub := firstField(t, out)
	n.ids[meshSub] = "<SUB-MESH>"
	golden(t, n, "subscription-create.txt", out)

	golden(t, n, "subscription-pending.txt", c.ok("subscription", "pending"))
	golden(t, n, "subscription-pending.json", c.ok("subscription", "pending", "-o", "json"))
	golden(t, n, "subscription-list.txt", sortedRows(c.ok("subscription", "list", "--status", "requested", "--owner", "SUB01")))
	golden(t, n, "subscription-list-endpoint.yaml", c.ok("subscription", "list", "--endpoint", "MBA01", "-o", "yaml"))

	// Usage errors, from the command line and from the server.
	c.fails(2, "subscription", "list", "--kind", "bogus")
	c.fails(2, "subscription", "list", "--no-such-flag")
	c.fails(2, "subscription", "get")
	c.fails(2, "-o", "xml", "subscription", "list")
	c.fails(2, "subscription", "create", "-f", filepath.Join(dir, "hook.json"))
	if msg := c.fails(3, "subscription", "get", "00000000-0000-0000-0000-000000000000"); !strings.Contains(msg, "not found") {
		t.Errorf("not-found message: %s", msg)
	}

	// Approve both, with a note; approving again is a conflict.
	golden(t, n, "subscription-approve.txt", c.ok("subscription", "approve", hookSub, meshSub, "--note", "checked with the practice"))
	if msg := c.fails(1, "subscription", "approve", hookSub); !strings.Contains(msg, "approve") || !strings.Contains(msg, "status change not allowed") {
		t.Errorf("conflict message: %s", msg)
	}
	// Several ids: each failure on its own line, the first failure's code.
	r := c.run("", "subscription", "suspend", meshSub, "00000000-0000-0000-0000-000000000000")
	if r.code != 3 || !strings.Contains(r.stdout, meshSub) || strings.Count(r.stderr, "emsctl:") != 2 {
		t.Errorf("suspend one good and one missing id: %s", r)
	}
	golden(t, n, "subscription-resume.json", c.ok("subscription", "resume", meshSub, "-o", "json"))
	golden(t, n, "subscription-get.txt", c.ok("subscription", "get", meshSub))
	golden(t, n, "subscription-get.json", c.ok("subscription", "get", meshSub, "-o", "json"))

	// Events: validate offline, publish through the public API.
	evPath, evID := eventFile(t, dir)
	n.ids[evID] = "<EVENT>"
	if out := c.ok("event", "validate", evPath); !strings.Contains(out, "valid pds-change-of-gp-1") {
		t.Errorf("validate: %s", out)
	}
	r = c.run("", "event", "publish", "--asid", "999999999999", evPath)
	if r.code != 1 || !strings.Contains(r.stdout, "403") && !strings.Contains(r.stdout, "ASID") {
		t.Errorf("publish from an unknown ASID: %s", r)
	}
	golden(t, n, "event-publish.txt", strings.ReplaceAll(c.ok("event", "publish", "--asid", publisher, evPath), dir, "<DIR>"))

	// The mailbox gets it; the webhook fails until the job is dead.
	eventually(t, 30*time.Second, "the webhook delivery to be dead", func() bool {
		return strings.Contains(c.ok("delivery", "list", "--endpoint", hookURL), " dead ")
	})
	// A built-in mailbox delivery is the inbox itself, not a delivery-log
	// record: read it as the subscriber would.
	mb := newMeshClient(e.baseURL(), "MBA01", "pwa", meshKey)
	var inbox []meshMessage
	eventually(t, 20*time.Second, "the mailbox delivery", func() bool {
		msgs, err := mb.drain(t)
		if err != nil {
			t.Fatal(err)
		}
		inbox = append(inbox, msgs...)
		return len(inbox) > 0
	})
	golden(t, n, "delivery-list.txt", c.ok("delivery", "list", "--event", evID, "--channel", "rest-hook"))
	golden(t, n, "delivery-list-state.txt", c.ok("delivery", "list", "--state", "dead"))
	if out := c.ok("delivery", "list", "--since", "1h", "-o", "json"); !strings.Contains(out, `"state": "dead"`) {
		t.Errorf("delivery list --since 1h: want the dead delivery:\n%s", out)
	}
	if out := c.ok("delivery", "list", "--since", "2099-01-01T00:00:00Z", "-o", "json"); !strings.Contains(out, `"deliveries": []`) {
		t.Errorf("delivery list --since in the future: %s", out)
	}
	jobID := firstField(t, c.ok("deadletter", "list"))
	golden(t, n, "deadletter-list.txt", c.ok("deadletter", "list"))
	golden(t, n, "delivery-get.txt", c.ok("delivery", "get", jobID))
	var rec struct {
		State    string `json:"state"`
		Matches  []struct{ Subscription, Kind string }
		Attempts []struct {
			Status  int    `json:"status"`
			Outcome string `json:"outcome"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(c.ok("delivery", "get", jobID, "-o", "json")), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.State != "dead" || len(rec.Matches) != 1 || rec.Matches[0].Subscription != hookSub || len(rec.Attempts) != 4 || rec.Attempts[3].Status != 500 {
		t.Errorf("delivery get -o json: %+v", rec)
	}
	c.fails(3, "delivery", "get", "no-such-job")
	// The breaker opens after three failures and half-opens after its
	// cool-down: its state depends on when we look.
	breakerRE := regexp.MustCompile(`\b(open|half-open|closed)\b`)
	// Only the webhook's row: the mailbox's is written to the log
	// asynchronously and may or may not be there yet.
	golden(t, n, "endpoint-list.txt", breakerRE.ReplaceAllString(rowsWith(c.ok("endpoint", "list"), hookURL), "<BREAKER>"))
	var eps []struct {
		Endpoint, Breaker, LastError string
		Dead                         int
	}
	if err := json.Unmarshal([]byte(c.ok("endpoint", "list", "-o", "json")), &eps); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ep := range eps {
		if ep.Endpoint == hookURL {
			found = true
			if ep.Dead != 1 || ep.LastError != "500" || ep.Breaker == "" {
				t.Errorf("endpoint list -o json, the webhook: %+v", ep)
			}
		}
	}
	if !found {
		t.Errorf("endpoint list -o json lacks %s: %+v", hookURL, eps)
	}
	c.fails(2, "endpoint", "reset")
	c.fails(3, "endpoint", "reset", "https://never-used.example.org/ems")
	golden(t, n, "endpoint-reset.txt", c.ok("endpoint", "reset", hookURL))

	// Replay: bulk needs confirmation, which a script gives with --yes.
	failing.Store(false)
	r = c.run("y\n", "replay", "--endpoint", hookURL)
	if r.code != 2 || !strings.Contains(r.stderr, "--yes") || !strings.Contains(r.stderr, "Replay 1 dead letters") {
		t.Errorf("replay without --yes and no terminal: %s", r)
	}
	c.fails(2, "replay")
	c.fails(2, "replay", jobID, "--endpoint", hookURL)
	c.fails(3, "replay", "no-such-job")
	golden(t, n, "replay.json", c.ok("replay", "--endpoint", hookURL, "--since", "1h", "--yes", "-o", "json"))
	eventually(t, 20*time.Second, "the replayed delivery", func() bool {
		return len(hook.ok()) == 1
	})
	eventually(t, 10*time.Second, "the delivery log to say delivered", func() bool {
		return strings.Contains(c.ok("delivery", "get", jobID), "delivered")
	})
	if out := c.ok("deadletter", "list", "-o", "json"); !strings.Contains(out, `"deadLetters": []`) && !strings.Contains(out, `"deadLetters": null`) {
		t.Errorf("dead letters after replay: %s", out)
	}

	// Delete, then it is gone.
	golden(t, n, "subscription-delete.txt", c.ok("subscription", "delete", meshSub))
	c.fails(3, "subscription", "get", meshSub)

	// The audit log has every change, by the token's name.
	audit := c.ok("audit", "list")
	for _, want := range []string{"POST", "/approve", "/suspend", "/resume", "DELETE", "/admin/v1/dead-letters/replay", "integration"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit list lacks %q:\n%s", want, audit)
		}
	}
	golden(t, n, "audit-list-operator.txt", c.ok("audit", "list", "--operator", "integration", "--limit", "3"))
	var entries struct {
		Entries []struct {
			Path   string          `json:"path"`
			Before json.RawMessage `json:"before"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(c.ok("audit", "list", "--limit", "1", "-o", "json")), &entries); err != nil || len(entries.Entries) != 1 ||
		!strings.Contains(string(entries.Entries[0].Before), meshSub) {
		t.Errorf("last audit entry should be the delete with the subscription before: %v %+v", err, entries)
	}

	// Authentication and reachability failures are one line, exit 1.
	bad := &ctl{t: t, env: append(append([]string(nil), c.env...), "EMS_TOKEN=wrong-token-0123456789")}
	if msg := bad.fails(1, "subscription", "list"); !strings.Contains(msg, "refused the operator token") {
		t.Errorf("bad token: %s", msg)
	}
	noTok := &ctl{t: t, env: append(append([]string(nil), c.env...), "EMS_TOKEN=")}
	noTok.fails(2, "subscription", "list")
	c.fails(1, "--server", "http://127.0.0.1:1", "subscription", "list")

	// The config file supplies what the environment does not.
	cfgDir := filepath.Join(dir, "xdg", "emsctl")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.yaml"), []byte("server: "+e.adminURL()+"\ntoken: "+adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := &ctl{t: t, env: []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "xdg"), "PATH=" + os.Getenv("PATH")}}
	if out := fromFile.ok("subscription", "list", "-o", "json"); !strings.Contains(out, hookSub) {
		t.Errorf("list with the config file: %s", out)
	}
}

// TestEmsctlCluster reads a two-node cluster through emsctl: status shows
// each node's webhook lanes, every lane held by a listed node, and
// `refdata list` shows both nodes converged on an import made through the
// other node.
func TestEmsctlCluster(t *testing.T) {
	nc := startNATSCluster(t)
	a := startClusterRefdataEMSD(t, nc, "a")
	b := startClusterRefdataEMSD(t, nc, "b")
	ca, cb := newCtl(t, a), newCtl(t, b)
	n := &normaliser{}

	// Lanes: the two nodes split the 32 between them (rendezvous hashing)
	// once each has seen the other join.
	var st struct {
		Cluster struct {
			Nodes []struct {
				Name string `json:"name"`
			} `json:"nodes"`
			Lanes map[string][]int `json:"lanes"`
		} `json:"cluster"`
	}
	eventually(t, 60*time.Second, "both nodes to hold lanes and none to be free", func() bool {
		st.Cluster.Lanes = nil
		if err := json.Unmarshal([]byte(cb.ok("status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return len(st.Cluster.Nodes) == 2 && len(st.Cluster.Lanes) == 2 && len(st.Cluster.Lanes["a"]) > 0 && len(st.Cluster.Lanes["b"]) > 0 &&
			len(st.Cluster.Lanes["a"])+len(st.Cluster.Lanes["b"]) == 32
	})
	out := cb.ok("status")
	if !strings.Contains(out, "cluster: this node b") || !strings.Contains(out, " LANES ") || strings.Contains(out, "warning:") {
		t.Errorf("status of a cluster with every lane held:\n%s", out)
	}
	// The table's row of each node ends its lanes cell with their count;
	// the layout of the cell is the unit tests' (cmd/emsctl).
	for node, lanes := range st.Cluster.Lanes {
		row := regexp.MustCompile(`(?m)^` + node + ` .*$`).FindString(out[strings.Index(out, "NODE "):])
		if want := "(" + strconv.Itoa(len(lanes)) + ")"; !strings.Contains(row, want) {
			t.Errorf("status row of %s lacks %s: %q", node, want, row)
		}
	}

	// Reference data imported on a is loaded and reported by both.
	src := filepath.Join("..", "subscription", "refdata", "testdata")
	ca.ok("refdata", "import", "nspl", filepath.Join(src, "nspl-2025-05.csv"))
	eventually(t, 30*time.Second, "both nodes to converge on nspl@1", func() bool {
		var l struct {
			Nodes []struct {
				Converged bool `json:"converged"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(cb.ok("refdata", "list", "-o", "json")), &l); err != nil {
			t.Fatal(err)
		}
		return len(l.Nodes) == 2 && l.Nodes[0].Converged && l.Nodes[1].Converged
	})
	golden(t, n, "refdata-list-cluster.txt", cb.ok("refdata", "list"))
	golden(t, n, "refdata-list-cluster-nspl.txt", cb.ok("refdata", "list", "nspl"))
	golden(t, n, "refdata-list-cluster.yaml", ca.ok("refdata", "list", "-o", "yaml"))
}
