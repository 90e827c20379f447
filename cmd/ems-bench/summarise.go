package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// summariseFiles reads the JSON reports of repeated runs and prints one
// Markdown table row per figure and configuration: the median with the
// range, the baseline's median, and the median of the per-run ratios.
// BENCHMARKS.md is made of these rows.
func summariseFiles(w io.Writer, files []string) error {
	type group struct {
		key  string
		reps []*report
	}
	var groups []*group
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if r.EMS == nil {
			continue
		}
		rate, _ := r.Options["rate"].(float64)
		key := fmt.Sprintf("%d subs, %d endpoints, %s, sync=%s", r.Subscriptions, r.Endpoints, rateText(rate), r.Sync)
		i := slices.IndexFunc(groups, func(g *group) bool { return g.key == key })
		if i < 0 {
			groups = append(groups, &group{key: key})
			i = len(groups) - 1
		}
		groups[i].reps = append(groups[i].reps, &r)
	}
	figures := []struct {
		name string
		get  func(*phase) float64
		unit string
	}{
		{"accepted events/s", func(p *phase) float64 { return p.AcceptedPerSec }, "%.0f"},
		{"end-to-end events/s (all delivered)", func(p *phase) float64 { return p.E2EPerSec }, "%.0f"},
		{"deliveries/s", func(p *phase) float64 { return p.DeliveriesPerSec }, "%.0f"},
		{"publish p50 ms", func(p *phase) float64 { return p.PublishMS.P50 }, "%.2f"},
		{"publish p99 ms", func(p *phase) float64 { return p.PublishMS.P99 }, "%.2f"},
		{"publish p99.9 ms", func(p *phase) float64 { return p.PublishMS.P999 }, "%.2f"},
		{"end-to-end p50 ms", func(p *phase) float64 { return p.E2EMS.P50 }, "%.1f"},
		{"end-to-end p99 ms", func(p *phase) float64 { return p.E2EMS.P99 }, "%.1f"},
		{"errors", func(p *phase) float64 { return float64(p.ErrorsTotal + p.MeshErrors + p.WebhookInvalid) }, "%.0f"},
		{"deliveries missing at the end", func(p *phase) float64 { return float64(p.Expected - p.Delivered) }, "%.0f"},
		{"emsd CPU cores", func(p *phase) float64 { return p.CPUCores }, "%.2f"},
		{"emsd peak RSS MiB (VmHWM)", func(p *phase) float64 { return p.PeakRSSMiB }, "%.0f"},
		{"emsd anonymous RSS MiB at the end", func(p *phase) float64 { return p.AnonMiB }, "%.0f"},
	}
	fmt.Fprintln(w, "| configuration | figure | emsd median (min–max) | baseline median | ratio (median) | runs | load avg (1 min) at start |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, g := range groups {
		var loads []string
		for _, r := range g.reps {
			loads = append(loads, strings.Fields(r.EMS.Load)[0])
		}
		for _, f := range figures {
			var vals, base, ratios []float64
			for _, r := range g.reps {
				v := f.get(r.EMS)
				vals = append(vals, v)
				if r.Baseline != nil && !strings.HasPrefix(f.name, "emsd") {
					b := f.get(r.Baseline)
					base = append(base, b)
					if b != 0 {
						ratios = append(ratios, v/b)
					}
				}
			}
			bs, rs := "–", "–"
			if len(base) > 0 {
				bs = fmt.Sprintf(f.unit, median(base))
			}
			if len(ratios) > 0 {
				rs = fmt.Sprintf("%.2f", median(ratios))
			}
			fmt.Fprintf(w, "| %s | %s | "+f.unit+" ("+f.unit+"–"+f.unit+") | %s | %s | %d | %s |\n",
				g.key, f.name, median(vals), slices.Min(vals), slices.Max(vals), bs, rs, len(vals), strings.Join(loads, ", "))
		}
		var startups, creates []float64
		for _, r := range g.reps {
			startups = append(startups, float64(r.StartupMS))
			if r.APICreatePerSec > 0 {
				creates = append(creates, r.APICreatePerSec)
			}
		}
		fmt.Fprintf(w, "| %s | emsd start-up to ready ms | %.0f (%.0f–%.0f) | – | – | %d | %s |\n", g.key, median(startups), slices.Min(startups), slices.Max(startups), len(startups), strings.Join(loads, ", "))
		if len(creates) > 0 {
			fmt.Fprintf(w, "| %s | Subscription API creates/s | %.0f (%.0f–%.0f) | – | – | %d | %s |\n", g.key, median(creates), slices.Min(creates), slices.Max(creates), len(creates), strings.Join(loads, ", "))
		}
	}
	return nil
}

func rateText(rate float64) string {
	if rate == 0 {
		return "flat out"
	}
	return fmt.Sprintf("%.0f events/s", rate)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
