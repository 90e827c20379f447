package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltTrimEvery is how often the map's resident pages are checked against
// bbolt.resident_limit (trimBoltMap).
const boltTrimEvery = time.Second

// trimBoltMap keeps the pages of db's read-only file map that emsd has
// touched from piling up in its resident set. Every page a read touches
// stays mapped, and the kernel maps up to 64 KiB around each faulted page
// whatever madvise says (fault-around): at 1M subscriptions the random
// index leaves that Subscription API writes walk left 500-600 MiB of the
// 1.3 GB file mapped (BENCHMARKS.md, "Memory"), although matching needs a
// small hot set. When the process's file-backed RSS passes limit, the map
// is unmapped with MADV_DONTNEED: for a shared file map that only drops
// the page-table entries. The pages stay in the page cache, so the next
// read of one is a minor fault with no I/O, and the data read is the file's
// either way (bbolt never writes through the map, and never reuses a page
// an open transaction can see). It runs until ctx ends.
func trimBoltMap(ctx context.Context, db *bolt.DB, limit int64, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resident, err := fileResident()
		if err != nil {
			log.Warn("reading file-backed RSS; bbolt map trimming stops", "err", err)
			return
		}
		if resident <= limit {
			continue
		}
		if err := dropBoltMap(db); err != nil {
			log.Warn("trimming the bbolt map; trimming stops", "err", err)
			return
		}
	}
}

// dropBoltMap unmaps the resident pages of db's map. The read transaction
// holds bbolt's mmap lock, so the map cannot be replaced (on growth)
// while it is advised.
func dropBoltMap(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		if err := madviseDontNeed(db.Info().Data, uintptr(tx.Size())); err != nil {
			return fmt.Errorf("madvise(MADV_DONTNEED) on the bbolt map: %w", err)
		}
		return nil
	})
}

// fileResident is the process's file-backed (and shared-memory) resident
// set in bytes: the third field of /proc/self/statm, cheaper to read than
// status or smaps.
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}
