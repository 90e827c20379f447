package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPeaks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         []memSample
		anon, file int64
	}{
		{"none", nil, 0, 0},
		{"apart", []memSample{{anon: 5, file: 1}, {anon: 2, file: 9}, {anon: 3, file: 4}}, 5, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, f := peaks(tc.in); a != tc.anon || f != tc.file {
				t.Fatalf("peaks = %d, %d; want %d, %d", a, f, tc.anon, tc.file)
			}
		})
	}
}

func TestMemSamplerReadsThisProcess(t *testing.T) {
	m := startMemSampler(context.Background(), os.Getpid(), 5*time.Millisecond)
	time.Sleep(30 * time.Millisecond)
	s := m.finish()
	if len(s) < 2 {
		t.Fatalf("%d samples in 30 ms at 5 ms", len(s))
	}
	if anon, _ := peaks(s); anon <= 0 {
		t.Fatalf("no anonymous RSS read: %+v", s[0])
	}
	path := filepath.Join(t.TempDir(), "mem.csv")
	if err := writeMemTrace(path, s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines != len(s)+1 {
		t.Fatalf("%d lines for %d samples:\n%s", lines, len(s), b)
	}
}
