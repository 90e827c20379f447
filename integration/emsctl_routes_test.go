package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// needRoute skips the test when emsd does not mount the admin route a
// command needs yet: emsctl says so in one line and exits 1.
func needRoute(t *testing.T, c *ctl, args ...string) {
	t.Helper()
	r := c.run("", args...)
	if r.code == 1 && strings.Contains(r.stderr, "no such admin route") {
		t.Skipf("emsd does not mount the route of emsctl %s yet: %s", strings.Join(args, " "), strings.TrimSpace(r.stderr))
	}
}

// TestEmsctlRefdata imports, lists, activates and rolls back reference data
// through emsctl, and reads the status page.
func TestEmsctlRefdata(t *testing.T) {
	e := startEMSD(t, t.TempDir(), "")
	c := newCtl(t, e)

	t.Run("status", func(t *testing.T) {
		needRoute(t, c, "status")
		var st struct {
			Version       string `json:"version"`
			UptimeSeconds int64  `json:"uptimeSeconds"`
			JetStream     struct {
				OK bool `json:"ok"`
			} `json:"jetstream"`
			Streams []struct {
				Name string `json:"name"`
			} `json:"streams"`
			DeadLetters *uint64 `json:"deadLetters"`
		}
		if err := json.Unmarshal([]byte(c.ok("status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range st.Streams {
			names = append(names, s.Name)
		}
		if !st.JetStream.OK || st.Version == "" || st.DeadLetters == nil || len(names) == 0 {
			t.Errorf("status: %+v", st)
		}
		out := c.ok("status")
		for _, want := range []string{"jetstream", "ok", "dead letters", "STREAM", "CONSUMER", "MAILBOX", names[0]} {
			if !strings.Contains(out, want) {
				t.Errorf("status table lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("refdata", func(t *testing.T) {
		needRoute(t, c, "refdata", "list")
		n := &normaliser{}
		src := filepath.Join("..", "subscription", "refdata", "testdata")
		golden(t, n, "refdata-import.txt", c.ok("refdata", "import", "nspl", filepath.Join(src, "nspl-2025-05.csv")))
		c.ok("refdata", "import", "nspl", filepath.Join(src, "nspl-2025-11.csv"), "--activate=false")
		golden(t, n, "refdata-list.txt", c.ok("refdata", "list", "nspl"))
		golden(t, n, "refdata-activate.json", c.ok("refdata", "activate", "nspl@2", "-o", "json"))
		if out := c.ok("refdata", "rollback", "nspl"); !strings.Contains(out, "nspl@1") {
			t.Errorf("rollback: %s", out)
		}
		c.fails(2, "refdata", "activate", "nspl")
		c.fails(3, "refdata", "activate", "nspl@99")
		c.fails(3, "refdata", "list", "nonsense")
		bad := filepath.Join(t.TempDir(), "bad.csv")
		if err := os.WriteFile(bad, []byte("pcds,ctry\nLS17 7DF\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if msg := c.fails(1, "refdata", "import", "nspl", bad); !strings.Contains(msg, "bad.csv") {
			t.Errorf("refused file: %s", msg)
		}
	})
}

// TestEmsctlMatchAgreesWithDelivery dry-runs an event with `event match`,
// publishes it with `event publish`, and checks that exactly the endpoints
// the dry run named received it.
func TestEmsctlMatchAgreesWithDelivery(t *testing.T) {
	e := startEMSD(t, t.TempDir(), deliveryConfig(fastRetry))
	c := newCtl(t, e)
	dir := t.TempDir()
	evPath, evID := eventFile(t, dir)
	needRoute(t, c, "event", "match", evPath)

	subs := map[string]string{
		subscribe(t, e, patient, "team-a", "message", "MBA01"): "MBA01",
		subscribe(t, e, patient, "", "message", "MBB01"):       "MBB01",
		subscribe(t, e, patient, "", "message", "MBC01"):       "MBC01",
		subscribe(t, e, otherNHS, "", "message", "MBD01"):      "MBD01",
	}
	var dry struct {
		Event struct {
			ID   string `json:"id"`
			Code string `json:"code"`
		} `json:"event"`
		Matches []struct {
			Subscription string `json:"subscription"`
			Endpoint     string `json:"endpoint"`
			Kind         string `json:"kind"`
		} `json:"matches"`
	}
	if err := json.Unmarshal([]byte(c.ok("event", "match", evPath, "-o", "json")), &dry); err != nil {
		t.Fatal(err)
	}
	if dry.Event.ID != evID || dry.Event.Code != "pds-change-of-gp-1" {
		t.Errorf("match event: %+v", dry.Event)
	}
	want := map[string]bool{}
	for _, m := range dry.Matches {
		if subs[m.Subscription] != m.Endpoint {
			t.Errorf("match names subscription %s with endpoint %s; it was created for %s", m.Subscription, m.Endpoint, subs[m.Subscription])
		}
		want[m.Endpoint] = true
	}
	if len(want) != 3 || want["MBD01"] {
		t.Errorf("dry run endpoints %v, want MBA01, MBB01, MBC01", want)
	}
	if out := c.ok("event", "match", evPath); !strings.Contains(out, "4 subscriptions") && !strings.Contains(out, "3 subscriptions, 3 endpoints") {
		t.Errorf("match table summary: %s", out)
	}

	// Nothing was delivered by the dry run.
	time.Sleep(300 * time.Millisecond)
	for _, mb := range []string{"MBA01", "MBB01", "MBC01", "MBD01"} {
		if msgs, _ := newMeshClient(e.baseURL(), mb, "pw"+strings.ToLower(mb[2:3]), meshKey).drain(t); len(msgs) != 0 {
			t.Fatalf("dry run delivered to %s", mb)
		}
	}

	c.ok("event", "publish", "--asid", publisher, evPath)
	got := map[string]bool{}
	eventually(t, 20*time.Second, "delivery to the matched mailboxes", func() bool {
		for _, mb := range []string{"MBA01", "MBB01", "MBC01", "MBD01"} {
			msgs, err := newMeshClient(e.baseURL(), mb, "pw"+strings.ToLower(mb[2:3]), meshKey).drain(t)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) > 0 {
				got[mb] = true
			}
		}
		return len(got) >= len(want)
	})
	time.Sleep(500 * time.Millisecond)
	var g, w []string
	for k := range got {
		g = append(g, k)
	}
	for k := range want {
		w = append(w, k)
	}
	sort.Strings(g)
	sort.Strings(w)
	if strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("delivered to %v, dry run said %v", g, w)
	}
}
