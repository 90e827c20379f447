package main

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/subscription/refdata"
)

// newRefdata opens the reference datasets and the demographics store, and
// mounts their operator routes. Server-side imports may read only from
// <data_dir>/import, so an operator token cannot read arbitrary files.
//
// In cluster mode the datasets and the demographics are shared through
// JetStream (docs/refdata.md "Cluster"), and this returns only once the
// node holds the cluster's active datasets: the fan-out must not start
// matching with other data than its peers'.
func newRefdata(ctx context.Context, cfg config.Config, db *bolt.DB, js jetstream.JetStream, adminSrv *admin.Server, log *slog.Logger) (*refdata.Service, error) {
	o := refdata.Options{DB: db, Logger: log, ImportDir: filepath.Join(cfg.DataDir, "import")}
	if cfg.Cluster.Enabled {
		o.Cluster = refdata.ClusterOptions{JS: js, Node: cfg.Cluster.NodeName, Replicas: cfg.Cluster.Replicas}
	}
	ref, err := refdata.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	if adminSrv != nil {
		if err := ref.RegisterAdmin(adminSrv, refdata.AdminOptions{Actor: operatorActor, RecordChange: admin.RecordChange}); err != nil {
			ref.Close()
			return nil, err
		}
	}
	return ref, nil
}
