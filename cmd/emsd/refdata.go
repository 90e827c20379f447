package main

import (
	"log/slog"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/subscription/refdata"
)

// newRefdata opens the reference datasets and the demographics store, and
// mounts their operator routes. Server-side imports may read only from
// <data_dir>/import, so an operator token cannot read arbitrary files.
func newRefdata(cfg config.Config, db *bolt.DB, adminSrv *admin.Server, log *slog.Logger) (*refdata.Service, error) {
	ref, err := refdata.New(refdata.Options{DB: db, Logger: log, ImportDir: filepath.Join(cfg.DataDir, "import")})
	if err != nil {
		return nil, err
	}
	if adminSrv != nil {
		if err := ref.RegisterAdmin(adminSrv, refdata.AdminOptions{Actor: operatorActor, RecordChange: admin.RecordChange}); err != nil {
			return nil, err
		}
	}
	return ref, nil
}
