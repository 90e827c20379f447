//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// seedBolt writes n 1 KiB values to a new database and returns it open.
func seedBolt(t *testing.T, n int) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	val := bytes.Repeat([]byte{'v'}, 1024)
	for i := 0; i < n; i += 10_000 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for j := i; j < min(n, i+10_000); j++ {
				if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(j)), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// readAll touches every value, as a scan would, and returns their sum so
// that the reads are not optimised away.
func readAll(t *testing.T, db *bolt.DB) (sum int) {
	t.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("b")).ForEach(func(_, v []byte) error {
			sum += int(v[0]) + int(v[len(v)-1])
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestDropBoltMapUnmapsAndReadsStayCorrect(t *testing.T) {
	const n = 64 << 10 // 64 MiB of values
	db := seedBolt(t, n)
	want := readAll(t, db)
	before, err := fileResident()
	if err != nil {
		t.Fatal(err)
	}
	if err := dropBoltMap(db); err != nil {
		t.Fatal(err)
	}
	after, _ := fileResident()
	if dropped := before - after; dropped < 48<<20 {
		t.Fatalf("file-backed RSS %d → %d MiB: the map's 64 MiB were not unmapped", before>>20, after>>20)
	}
	if got := readAll(t, db); got != want {
		t.Fatalf("after trimming, the values read sum to %d, want %d", got, want)
	}
	// Writes after a trim are read back too (the map is the file's).
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("b")).Put([]byte("k"), []byte("new"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := dropBoltMap(db); err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("b")).Get([]byte("k")); string(v) != "new" {
			t.Fatalf("after a write and a trim, got %q", v)
		}
		return nil
	})
}

func TestTrimBoltMapKeepsResidentUnderLimit(t *testing.T) {
	db := seedBolt(t, 64<<10)
	base, _ := fileResident()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimBoltMap(ctx, db, base+16<<20, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	readAll(t, db) // ~64 MiB mapped
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := fileResident()
		if cur <= base+16<<20 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("file-backed RSS still %d MiB (limit %d MiB) after 5 s", cur>>20, (base+16<<20)>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
