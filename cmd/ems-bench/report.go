package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// phase is what one pipeline (emsd or the baseline) measured.
type phase struct {
	Load             string  `json:"load_avg_at_start"`
	AcceptedPerSec   float64 `json:"accepted_per_s"`
	Accepted         int64   `json:"accepted"`
	Errors           int64   `json:"errors"`
	ErrorsTotal      int64   `json:"errors_incl_warmup"`
	FirstError       string  `json:"first_error,omitempty"`
	P50, P90         float64 `json:"-"`
	PublishMS        latency `json:"publish_latency_ms"`
	E2EMS            latency `json:"end_to_end_latency_ms"`
	Expected         int64   `json:"deliveries_expected"`
	Delivered        int64   `json:"deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	E2EPerSec        float64 `json:"end_to_end_events_per_s"`
	Complete         bool    `json:"all_delivered"`
	DrainMS          int64   `json:"drain_after_window_ms"`
	CPUCores         float64 `json:"cpu_cores"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"`
	RSSMiB           float64 `json:"rss_mib,omitempty"`
	AnonMiB          float64 `json:"rss_anon_mib,omitempty"`
	PeakAnonMiB      float64 `json:"peak_rss_anon_mib,omitempty"`
	PeakFileMiB      float64 `json:"peak_rss_file_mib,omitempty"`
	MeshErrors       int64   `json:"mesh_errors"`
	MeshRequestMS    latency `json:"mesh_request_latency_ms"`
	MeshRequests     uint64  `json:"mesh_requests"`
	MeshPolls        int64   `json:"mesh_inbox_lists"`
	MeshListMS       latency `json:"mesh_list_latency_ms"`
	MeshRetrieveMS   latency `json:"mesh_retrieve_latency_ms"`
	MeshAckMS        latency `json:"mesh_ack_latency_ms"`
	WebhookInvalid   int64   `json:"webhook_bad_signatures"`
	Foreign          int64   `json:"deliveries_not_published_by_run"`
	Note             string  `json:"note,omitempty"`
}

type latency struct {
	P50, P90, P99, P999, Max, Mean float64
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func latencyOf(h *histogram) latency {
	return latency{P50: ms(h.quantile(0.5)), P90: ms(h.quantile(0.9)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(h.quantile(1)), Mean: ms(h.mean())}
}

func summarise(res *loadResult, tr *tracker, complete bool, load string) *phase {
	p := &phase{Load: load, Accepted: res.accepted.Load(), Errors: res.errors.Load(), ErrorsTotal: res.errorsTotal.Load(),
		Expected: res.expected.Load(), Delivered: tr.deliveries.Load(), Complete: complete, Foreign: tr.foreign.Load()}
	if v, ok := res.firstErr.Load().(string); ok {
		p.FirstError = v
	}
	p.AcceptedPerSec = float64(p.Accepted) / res.window.Seconds()
	p.PublishMS, p.E2EMS = latencyOf(&res.latency), latencyOf(&tr.e2e)
	// Deliveries and end-to-end events count from the window's start to
	// the last delivery of a window message (or the window's end, if
	// delivery kept up): a pipeline that accepts fast but delivers late
	// is charged for the lag.
	span := res.window
	if last := time.Duration(tr.lastDeliveryNS.Load()) - res.windowStart; last > span {
		span = last
	}
	p.DrainMS = (span - res.window).Milliseconds()
	p.DeliveriesPerSec = float64(p.Delivered) / span.Seconds()
	if complete {
		p.E2EPerSec = float64(p.Accepted) / span.Seconds()
	}
	return p
}

type report struct {
	Started         string         `json:"started"`
	Machine         string         `json:"machine"`
	LoadBefore      string         `json:"load_avg_before"`
	LoadAfter       string         `json:"load_avg_after"`
	Sync            string         `json:"sync"`
	Options         map[string]any `json:"options"`
	Subscriptions   int            `json:"subscriptions"`
	Endpoints       int            `json:"endpoints"`
	Mailboxes       int            `json:"mailboxes"`
	Webhooks        int            `json:"webhooks"`
	Patients        int            `json:"patients"`
	Seeded          int            `json:"seeded"`
	SeedPerSec      float64        `json:"seeded_per_s,omitempty"`
	APICreated      int            `json:"api_created"`
	APICreatePerSec float64        `json:"api_create_per_s,omitempty"`
	StartupMS       int64          `json:"startup_ms"`
	StartupWallMS   int64          `json:"startup_wall_ms"`
	EMS             *phase         `json:"emsd"`
	Baseline        *phase         `json:"baseline,omitempty"`
	Profile         string         `json:"cpu_profile,omitempty"`
	ProfileError    string         `json:"cpu_profile_error,omitempty"`
	smoke           bool
}

func (r *report) printTable(w io.Writer) {
	fmt.Fprintf(w, "ems-bench %s | %s | sync=%s | load %s → %s\n", r.Started, r.Machine, r.Sync, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "subscriptions %d (%d seeded at %.0f/s, %d via API at %.0f/s) | endpoints %d (%d mailboxes, %d webhooks) | patients %d | emsd ready in %d ms (%d ms wall)\n",
		r.Subscriptions, r.Seeded, r.SeedPerSec, r.APICreated, r.APICreatePerSec, r.Endpoints, r.Mailboxes, r.Webhooks, r.Patients, r.StartupMS, r.StartupWallMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	e, b := r.EMS, r.Baseline
	fmt.Fprintln(tw, "metric\temsd\tbaseline\tratio\t")
	row := func(name string, v func(*phase) float64, format string) {
		ev := v(e)
		if b == nil || strings.HasPrefix(name, "MESH") {
			fmt.Fprintf(tw, "%s\t"+format+"\t-\t-\t\n", name, ev)
			return
		}
		bv := v(b)
		ratio := "-"
		if bv != 0 {
			ratio = fmt.Sprintf("%.2f", ev/bv)
		}
		fmt.Fprintf(tw, "%s\t"+format+"\t"+format+"\t%s\t\n", name, ev, bv, ratio)
	}
	row("accepted events/s", func(p *phase) float64 { return p.AcceptedPerSec }, "%.0f")
	row("end-to-end events/s", func(p *phase) float64 { return p.E2EPerSec }, "%.0f")
	row("deliveries/s", func(p *phase) float64 { return p.DeliveriesPerSec }, "%.0f")
	row("publish p50 ms", func(p *phase) float64 { return p.PublishMS.P50 }, "%.2f")
	row("publish p90 ms", func(p *phase) float64 { return p.PublishMS.P90 }, "%.2f")
	row("publish p99 ms", func(p *phase) float64 { return p.PublishMS.P99 }, "%.2f")
	row("publish p99.9 ms", func(p *phase) float64 { return p.PublishMS.P999 }, "%.2f")
	row("end-to-end p50 ms", func(p *phase) float64 { return p.E2EMS.P50 }, "%.1f")
	row("end-to-end p99 ms", func(p *phase) float64 { return p.E2EMS.P99 }, "%.1f")
	row("end-to-end p99.9 ms", func(p *phase) float64 { return p.E2EMS.P999 }, "%.1f")
	row("accepted", func(p *phase) float64 { return float64(p.Accepted) }, "%.0f")
	row("errors", func(p *phase) float64 { return float64(p.Errors + p.MeshErrors + p.WebhookInvalid) }, "%.0f")
	row("deliveries expected", func(p *phase) float64 { return float64(p.Expected) }, "%.0f")
	row("deliveries", func(p *phase) float64 { return float64(p.Delivered) }, "%.0f")
	row("drain after window ms", func(p *phase) float64 { return float64(p.DrainMS) }, "%.0f")
	row("MESH requests", func(p *phase) float64 { return float64(p.MeshRequests) }, "%.0f")
	row("MESH inbox lists", func(p *phase) float64 { return float64(p.MeshPolls) }, "%.0f")
	row("MESH request p50 ms", func(p *phase) float64 { return p.MeshRequestMS.P50 }, "%.2f")
	row("MESH request p99 ms", func(p *phase) float64 { return p.MeshRequestMS.P99 }, "%.2f")
	row("MESH list p50 ms", func(p *phase) float64 { return p.MeshListMS.P50 }, "%.2f")
	row("MESH retrieve p50 ms", func(p *phase) float64 { return p.MeshRetrieveMS.P50 }, "%.2f")
	row("MESH acknowledge p50 ms", func(p *phase) float64 { return p.MeshAckMS.P50 }, "%.2f")
	tw.Flush()
	fmt.Fprintf(w, "emsd process: %.2f CPU cores over warm-up and window, peak RSS %.0f MiB; at the end RSS %.0f MiB of which anonymous %.0f MiB (the rest is file-backed, mostly the bbolt map)\n",
		e.CPUCores, e.PeakRSSMiB, e.RSSMiB, e.AnonMiB)
	if e.PeakAnonMiB > 0 {
		fmt.Fprintf(w, "emsd memory sampled each second from the warm-up to the end of the drain: peak anonymous %.0f MiB, peak file-backed %.0f MiB\n", e.PeakAnonMiB, e.PeakFileMiB)
	}
	if b != nil {
		fmt.Fprintf(w, "baseline runs inside the bench process: %.2f CPU cores including the load generator; load avg at start: emsd %s, baseline %s\n", b.CPUCores, e.Load, b.Load)
	}
	if e.FirstError != "" {
		fmt.Fprintf(w, "first emsd error: %s\n", e.FirstError)
	}
	if r.Profile != "" {
		fmt.Fprintf(w, "CPU profile of emsd over the window: %s (go tool pprof -top %s)\n", r.Profile, r.Profile)
	}
	if r.ProfileError != "" {
		fmt.Fprintf(w, "CPU profile failed: %s\n", r.ProfileError)
	}
}

// problems are the reasons a run counts as failed: errors anywhere, or
// deliveries missing after the drain timeout.
func (r *report) problems() []string {
	var out []string
	for name, p := range map[string]*phase{"emsd": r.EMS, "baseline": r.Baseline} {
		if p == nil {
			continue
		}
		if n := p.ErrorsTotal + p.MeshErrors + p.WebhookInvalid; n > 0 {
			out = append(out, fmt.Sprintf("%s: %d errors (first: %s)", name, n, p.FirstError))
		}
		if !p.Complete {
			out = append(out, fmt.Sprintf("%s: %d of %d deliveries arrived before the drain timeout", name, p.Delivered, p.Expected))
		}
		if r.smoke && (p.Accepted == 0 || p.Delivered == 0) {
			out = append(out, fmt.Sprintf("%s: nothing accepted or delivered", name))
		}
		if p.Foreign > 0 {
			out = append(out, fmt.Sprintf("%s: %d deliveries of messages this run did not publish", name, p.Foreign))
		}
	}
	if r.ProfileError != "" {
		out = append(out, "CPU profile: "+r.ProfileError)
	}
	return out
}

func splitLines(s string) []string { return strings.Split(s, "\n") }

func bytesIndex(s string, c byte) int { return strings.IndexByte(s, c) }
