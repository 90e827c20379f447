package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/subscription"
)

func TestPopulationConfigIsValid(t *testing.T) {
	p := newPopulation(500, 80, 50, 10, 2, "http://127.0.0.1:9")
	path := filepath.Join(t.TempDir(), "emsd.yaml")
	if err := os.WriteFile(path, []byte(p.config("always", "token-0123456789abcdef")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{"--config", path, "--data-dir", t.TempDir()}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Delivery.Mesh.Mailboxes); got != p.mailboxes {
		t.Errorf("%d mailboxes configured, want %d", got, p.mailboxes)
	}
	if cfg.NATS.Embedded.Sync != config.SyncAlways {
		t.Errorf("sync %q", cfg.NATS.Embedded.Sync)
	}
}

// TestPopulationWantMatchesCriteria checks the load generator's expected
// deliveries against the subscriptions' own criteria, parsed by the
// subscription package: every explicit subscription of patient p must name
// p's NHS number and event, and its endpoint must be in want[p].
func TestPopulationWantMatchesCriteria(t *testing.T) {
	p := newPopulation(2000, 70, 40, 5, 2, "http://127.0.0.1:9")
	explicit := 0
	for i := range p.subs {
		k := p.kind(i)
		c, cerr := subscription.ParseCriteria(p.criteria(k))
		if cerr != nil {
			t.Fatalf("subscription %d: %v", i, cerr)
		}
		if !k.explicit {
			if c.Kind != subscription.Generic {
				t.Fatalf("subscription %d: kind %v", i, c.Kind)
			}
			continue
		}
		explicit++
		if c.Kind != subscription.Explicit || c.NHSNumber != nhsNumber(k.patient) || !c.HasEvent(examples[eventOf(k.patient)].event) {
			t.Fatalf("subscription %d: criteria %+v for patient %d", i, c, k.patient)
		}
		if !containsInt32(p.want[k.patient], int32(k.endpoint)) {
			t.Fatalf("subscription %d: endpoint %d not expected for patient %d", i, k.endpoint, k.patient)
		}
	}
	if explicit < 1200 || explicit > 1600 {
		t.Errorf("%d explicit of 2000 at 70%%", explicit)
	}
	n := 0
	for _, w := range p.want {
		n += len(w)
	}
	if n > explicit {
		t.Errorf("%d expected endpoints from %d explicit subscriptions", n, explicit)
	}
}

func TestReadProcSelf(t *testing.T) {
	st, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.peak <= 0 || st.rss <= 0 || st.peak < st.rss {
		t.Errorf("rss %d peak %d", st.rss, st.peak)
	}
}
