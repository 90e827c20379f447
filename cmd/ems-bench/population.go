package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/subscription"
)

// population is the deterministic set of organisations, endpoints and
// subscriptions of one run. Subscription i is a function of i alone, so the
// load generator knows which endpoints each event must reach without
// asking the server.
type population struct {
	subs, explicitPct   int
	mailboxes, webhooks int
	orgs, patients      int
	hookBase            string // http://host:port of the bench's receiver

	// want[p] lists the distinct endpoints patient p's event must reach.
	want [][]int32
}

const (
	publisherASID = "200000000118"
	publisherODS  = "X26"
	meshKey       = "BackBone"
	meshPassword  = "bench-pw"
	hookSecret    = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="
	criteriaBase  = "/Bundle?type=message"
)

func newPopulation(subs, explicitPct, endpoints int, webhookPct, perPatient float64, hookBase string) *population {
	p := &population{subs: subs, explicitPct: explicitPct, hookBase: hookBase}
	if webhookPct > 0 {
		p.webhooks = max(1, int(float64(endpoints)*webhookPct/100))
	}
	p.mailboxes = max(1, endpoints-p.webhooks)
	p.orgs = max(1, p.mailboxes/10)
	explicit := subs * explicitPct / 100
	// A fixed number of explicit subscriptions per patient: an event
	// reaches about that many endpoints, whatever the population size.
	p.patients = max(1, int(float64(explicit)/max(perPatient, 0.01)))
	p.want = make([][]int32, p.patients)
	for i := range subs {
		k := p.kind(i)
		if k.explicit {
			w := p.want[k.patient]
			if !containsInt32(w, int32(k.endpoint)) {
				p.want[k.patient] = append(w, int32(k.endpoint))
			}
		}
	}
	return p
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (p *population) endpoints() int { return p.mailboxes + p.webhooks }

func (p *population) mailboxName(e int) string { return fmt.Sprintf("MB%06d", e) }
func (p *population) orgODS(o int) string      { return fmt.Sprintf("B%05d", o) }
func (p *population) orgASID(o int) string     { return fmt.Sprintf("7%011d", o) }
func (p *population) hookURL(w int) string     { return fmt.Sprintf("%s/hook/%d", p.hookBase, w) }

// ownerOf is the organisation owning endpoint e (mailboxes in tens, then
// webhooks round-robin).
func (p *population) ownerOf(e int) int {
	if e < p.mailboxes {
		return min(e/10, p.orgs-1)
	}
	return (e - p.mailboxes) % p.orgs
}

func (p *population) endpointName(e int) string {
	if e < p.mailboxes {
		return p.mailboxName(e)
	}
	return p.hookURL(e - p.mailboxes)
}

// eventOf is the event type published for (and subscribed to for) patient
// pt: each patient has one, so every explicit subscription can match.
func eventOf(pt int) int { return pt % len(examples) }

type subKind struct {
	explicit bool
	patient  int
	endpoint int
	org      int // generic: the organisation code the rule names
}

// mix scatters i so that neighbours land on unrelated patients and
// endpoints (a multiplicative hash; any bijection would do).
func mix(i int) uint64 {
	x := uint64(i)*0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019
	x ^= x >> 31
	return x * 0xBF58476D1CE4E5B9
}

func (p *population) kind(i int) subKind {
	h := mix(i)
	k := subKind{explicit: int(h%100) < p.explicitPct, endpoint: int((h >> 8) % uint64(p.endpoints()))}
	if k.explicit {
		k.patient = int((h >> 32) % uint64(p.patients))
	} else {
		k.org = int((h >> 32) % uint64(max(1, p.subs/40)))
	}
	return k
}

func (p *population) criteria(k subKind) string {
	if k.explicit {
		return criteriaBase + "&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsNumber(k.patient) +
			"&MessageHeader.event=" + examples[eventOf(k.patient)].event
	}
	// Generic rules name GP practices no example carries: they sit in the
	// index (and cost memory and look-ups) but match nothing.
	return criteriaBase + "&MessageHeader.event=" + examples[k.org%len(examples)].event +
		"&subscriptionRuleType=" + string(subscription.RuleGPPractice) + "&Organization.identifier=" + fmt.Sprintf("G%06d", k.org)
}

func (p *population) channel(e int) subscription.Channel {
	if e < p.mailboxes {
		return subscription.Channel{Type: "message", Endpoint: p.mailboxName(e)}
	}
	return subscription.Channel{Type: "rest-hook", Endpoint: p.hookURL(e - p.mailboxes), Payload: "application/fhir+xml"}
}

// resource is subscription i as the Subscription API takes it.
func (p *population) resource(i int) (body []byte, asid string) {
	k := p.kind(i)
	o := p.ownerOf(k.endpoint)
	ch := p.channel(k.endpoint)
	c := map[string]any{"type": ch.Type, "endpoint": ch.Endpoint}
	if ch.Payload != "" {
		c["payload"] = ch.Payload
	}
	body, _ = json.Marshal(map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{"https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"}},
		"status":       "requested",
		"contact":      []any{map[string]any{"system": "url", "value": "https://directory.spineservices.nhs.uk/STU3/Organization/" + p.orgODS(o), "use": "work"}},
		"reason":       "ems-bench",
		"criteria":     p.criteria(k),
		"channel":      c,
	})
	return body, p.orgASID(o)
}

// config is the emsd configuration for the population.
func (p *population) config(sync, adminToken string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats:\n  embedded:\n    sync: %s\n", sync)
	fmt.Fprintf(&b, "admin:\n  tokens:\n    - name: bench\n      token: %s\n", adminToken)
	events := make([]string, len(examples))
	for i, ex := range examples {
		events[i] = ex.event
	}
	fmt.Fprintf(&b, "registry:\n  asids:\n    %q:\n      ods: %s\n      publish_events: [%s]\n", publisherASID, publisherODS, strings.Join(events, ", "))
	mbs := make([][]string, p.orgs)
	for e := range p.mailboxes {
		o := p.ownerOf(e)
		mbs[o] = append(mbs[o], p.mailboxName(e))
	}
	for o := range p.orgs {
		fmt.Fprintf(&b, "    %q:\n      ods: %s\n", p.orgASID(o), p.orgODS(o))
		if len(mbs[o]) > 0 {
			fmt.Fprintf(&b, "      mailboxes: [%s]\n", strings.Join(mbs[o], ", "))
		}
	}
	fmt.Fprintf(&b, "delivery:\n  mesh:\n    shared_key: %s\n    mailboxes:\n", meshKey)
	for e := range p.mailboxes {
		fmt.Fprintf(&b, "      %s: {password: %s, ods: %s}\n", p.mailboxName(e), meshPassword, p.orgODS(p.ownerOf(e)))
	}
	fmt.Fprintf(&b, "  webhook:\n    allow_http: true\n    allow_networks: [127.0.0.0/8]\n    signing_secrets: [%q]\n", hookSecret)
	return b.String()
}

// createAPI creates subscriptions from..to-1 through the public API with
// conc concurrent clients, and returns how long it took.
func (p *population) createAPI(ctx context.Context, base string, from, to, conc int, client *http.Client) (time.Duration, error) {
	var next atomic.Int64
	next.Store(int64(from))
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	started := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				body, asid := p.resource(i)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/STU3/Subscription", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("fromASID", asid)
				resp, err := client.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					// A duplicate (same owner, endpoint and criteria as an
					// earlier one) is a valid outcome of the generator.
					if resp.StatusCode != http.StatusCreated && !bytes.Contains(b, []byte("DUPLICATE_REJECTED")) {
						err = fmt.Errorf("subscription %d: HTTP %d: %.300s", i, resp.StatusCode, b)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(started), firstErr
}

// seed stores subscriptions from..to-1 straight into emsd's bbolt file,
// before emsd starts, through the subscription package's own Store (the
// same records, indexes and history a create writes). Syncing once at the
// end instead of per transaction is what makes a million feasible: the
// public API pays one fsync per create.
func (p *population) seed(path string, from, to int) (time.Duration, error) {
	started := time.Now()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("opening %s to seed: %w", path, err)
	}
	defer db.Close()
	store, err := subscription.NewStore(subscription.StoreOptions{DB: db})
	if err != nil {
		return 0, err
	}
	for i := from; i < to; i++ {
		k := p.kind(i)
		text := p.criteria(k)
		crit, cerr := subscription.ParseCriteria(text)
		if cerr != nil {
			return 0, fmt.Errorf("criteria %q: %v", text, cerr)
		}
		o := p.ownerOf(k.endpoint)
		sub := subscription.Subscription{Status: subscription.StatusActive, Owner: p.orgODS(o),
			Contacts:     []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/" + p.orgODS(o), Use: "work"}},
			Reason:       "ems-bench",
			CriteriaText: text, Criteria: crit, Channel: p.channel(k.endpoint), CreatedBy: p.orgASID(o)}
		if _, err := store.Create(sub, "asid:"+p.orgASID(o), subscription.CreateOptions{}); err != nil {
			return 0, fmt.Errorf("seeding subscription %d: %w", i, err)
		}
		if (i-from)%100_000 == 99_999 {
			progressf("seeding subscriptions: %d/%d (%.0f/s)", i-from+1, to-from, float64(i-from+1)/time.Since(started).Seconds())
		}
	}
	if err := db.Sync(); err != nil {
		return 0, fmt.Errorf("syncing seeded store: %w", err)
	}
	return time.Since(started), nil
}
