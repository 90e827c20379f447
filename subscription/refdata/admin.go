package refdata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ems-broker/ems/subscription"
)

// Registrar is the admin mux, the same one the subscription routes use.
type Registrar = subscription.Registrar

// AdminOptions configure the operator routes, as for the subscription
// service's.
type AdminOptions struct {
	// Actor names the operator behind a request. Mandatory.
	Actor func(r *http.Request) string
	// RecordChange, when set, receives the active version of a dataset
	// before and after an import, activation or rollback, for the audit log.
	RecordChange func(ctx context.Context, before, after any)
}

// Demographics is the pseudo-kind the import route accepts for the
// patients' bootstrap CSV.
const kindDemographics = "demographics"

// RegisterAdmin mounts the reference-data routes under /admin/v1/refdata:
//
//	GET  /admin/v1/refdata                            every kind's versions
//	GET  /admin/v1/refdata/{kind}                     one kind's versions
//	POST /admin/v1/refdata/{kind}                     import: the body is the file, or
//	                                                  ?path=F or JSON {"path": "F"} under ImportDir
//	POST /admin/v1/refdata/{kind}/{version}/activate  make a version active
//	POST /admin/v1/refdata/{kind}/rollback            re-activate the previous version
//	GET  /admin/v1/refdata/lookup?postcode=&practice= what the active data says
//
// {kind} is nspl, subicb or epraccur; the import route also takes
// "demographics" for the patients' bootstrap CSV.
func (s *Service) RegisterAdmin(r Registrar, opts AdminOptions) error {
	if opts.Actor == nil {
		return errors.New("refdata admin: AdminOptions.Actor is mandatory")
	}
	if opts.RecordChange == nil {
		opts.RecordChange = func(context.Context, any, any) {}
	}
	a := &admin{s: s, opts: opts}
	r.Handle("GET /admin/v1/refdata", http.HandlerFunc(a.listAll))
	r.Handle("GET /admin/v1/refdata/lookup", http.HandlerFunc(a.lookup))
	r.Handle("GET /admin/v1/refdata/{kind}", http.HandlerFunc(a.list))
	r.Handle("POST /admin/v1/refdata/{kind}", http.HandlerFunc(a.importFile))
	r.Handle("POST /admin/v1/refdata/{kind}/{version}/activate", http.HandlerFunc(a.activate))
	r.Handle("POST /admin/v1/refdata/{kind}/rollback", http.HandlerFunc(a.rollback))
	return nil
}

type admin struct {
	s    *Service
	opts AdminOptions
}

// KindVersions is one kind in the list answers.
type KindVersions struct {
	Kind     Kind      `json:"kind"`
	Active   *Version  `json:"active"`
	Versions []Version `json:"versions"`
	// Cluster is the cluster's versions of the kind (cluster mode); the
	// fields above are what this node has loaded.
	Cluster *ClusterVersions `json:"cluster,omitempty"`
}

// ClusterVersions is one kind's cluster state, as every node follows it.
type ClusterVersions struct {
	Active   uint64    `json:"active"`
	Previous uint64    `json:"previous"`
	Versions []Version `json:"versions"`
}

func (a *admin) kindVersions(k Kind) (KindVersions, error) {
	vs, err := a.s.store.Versions(k)
	out := KindVersions{Kind: k, Versions: vs}
	if c := a.s.cluster; c != nil {
		st, _, serr := c.state(k)
		if serr != nil {
			return out, serr
		}
		out.Cluster = &ClusterVersions{Active: st.Active, Previous: st.Previous, Versions: st.Versions}
		for i := range out.Cluster.Versions {
			v := &out.Cluster.Versions[i]
			v.Active, v.Previous = v.Version == st.Active, v.Version == st.Previous
		}
		if out.Cluster.Versions == nil {
			out.Cluster.Versions = []Version{}
		}
	}
	if out.Versions == nil {
		out.Versions = []Version{}
	}
	for i := range vs {
		if vs[i].Active {
			out.Active = &vs[i]
		}
	}
	return out, err
}

func (a *admin) listAll(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Datasets []KindVersions `json:"datasets"`
		Active   string         `json:"active"`
		// Cluster mode: the cluster's active versions, and what every
		// node has loaded; converged nodes match with the same data.
		ClusterActive string       `json:"clusterActive,omitempty"`
		Nodes         []NodeLoaded `json:"nodes,omitempty"`
	}{Active: a.s.store.Label()}
	if c := a.s.cluster; c != nil {
		nodes, err := c.nodes(r.Context())
		if err != nil {
			adminError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		out.ClusterActive, out.Nodes = c.activeLabel(), nodes
	}
	for _, k := range Kinds {
		kv, err := a.kindVersions(k)
		if err != nil {
			adminError(w, http.StatusInternalServerError, err.Error())
			return
		}
		out.Datasets = append(out.Datasets, kv)
	}
	adminJSON(w, http.StatusOK, out)
}

func (a *admin) kind(w http.ResponseWriter, r *http.Request) (Kind, bool) {
	k := Kind(r.PathValue("kind"))
	if !k.Valid() {
		adminError(w, http.StatusNotFound, fmt.Sprintf("kind: %q is not nspl, subicb or epraccur", k))
		return "", false
	}
	return k, true
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	k, ok := a.kind(w, r)
	if !ok {
		return
	}
	kv, err := a.kindVersions(k)
	if err != nil {
		adminError(w, http.StatusInternalServerError, err.Error())
		return
	}
	adminJSON(w, http.StatusOK, kv)
}

// activeVersion is the audit "before"/"after": nil when nothing is active.
func (a *admin) activeVersion(k Kind) any {
	v, err := a.s.store.Active(k)
	if err != nil {
		return nil
	}
	return v
}

// importFile streams the request body (or a server-side file) into a new
// version. The body is never buffered: a 1 GB directory is read as it
// arrives.
func (a *admin) importFile(w http.ResponseWriter, r *http.Request) {
	kindName := r.PathValue("kind")
	if kindName != kindDemographics && !Kind(kindName).Valid() {
		adminError(w, http.StatusNotFound, fmt.Sprintf("kind: %q is not nspl, subicb, epraccur or demographics", kindName))
		return
	}
	q := r.URL.Query()
	activate := true
	if v := q.Get("activate"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			adminError(w, http.StatusBadRequest, fmt.Sprintf("activate: %q is not true or false", v))
			return
		}
		activate = b
	}
	// A national file takes tens of seconds to arrive and import: the
	// admin server's read and write timeouts, right for every other route,
	// must not cut it off. The operator's client and ^C bound it instead.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	body, name, size := io.Reader(r.Body), q.Get("name"), r.ContentLength
	if name == "" {
		name = "upload"
	}
	path := q.Get("path")
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var req struct {
			Path     string `json:"path"`
			Activate *bool  `json:"activate"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Path == "" {
			adminError(w, http.StatusBadRequest, `body: expected {"path": "...", "activate": true} or the file itself`)
			return
		}
		if req.Activate != nil {
			activate = *req.Activate
		}
		path = req.Path
	}
	if path != "" {
		f, err := a.openUnderImportDir(path)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		body, name, size = f, path, st.Size()
	}
	actor := a.opts.Actor(r)
	if kindName == kindDemographics {
		importCSV := a.s.patients.ImportCSV
		if a.s.shared != nil {
			importCSV = a.s.shared.ImportCSV
		}
		n, err := importCSV(r.Context(), body, name)
		if err != nil {
			importError(w, err)
			return
		}
		a.s.log.Info("refdata: demographics imported", "source", name, "rows", n, "actor", actor)
		a.opts.RecordChange(r.Context(), nil, map[string]any{"demographicsImport": name, "rows": n})
		adminJSON(w, http.StatusOK, map[string]any{"kind": kindDemographics, "source": name, "rows": n})
		return
	}
	k := Kind(kindName)
	before := a.activeVersion(k)
	src := Source{Name: name, Size: max(size, 0), Actor: actor, Activate: activate}
	var v Version
	var err error
	if a.s.cluster != nil {
		v, err = a.s.cluster.importFile(r.Context(), k, body, src)
	} else {
		v, err = a.s.store.Import(r.Context(), k, body, src)
	}
	if err != nil {
		importError(w, err)
		return
	}
	if activate {
		a.opts.RecordChange(r.Context(), before, v)
	}
	adminJSON(w, http.StatusCreated, v)
}

func (a *admin) openUnderImportDir(p string) (*os.File, error) {
	if a.s.importDir == "" {
		return nil, errors.New("path: server-side imports are disabled (no import directory configured)")
	}
	root, err := filepath.EvalSymlinks(a.s.importDir)
	if err != nil {
		return nil, fmt.Errorf("import directory: %w", err)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	inside := func(p string) bool {
		rel, err := filepath.Rel(root, p)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	// Checked on the name first (so "../x" is refused whether or not it
	// exists), then on the resolved file (so a symlink cannot lead out).
	if !inside(filepath.Clean(p)) {
		return nil, fmt.Errorf("path: %s is outside the import directory", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if !inside(real) {
		return nil, fmt.Errorf("path: %s is outside the import directory", p)
	}
	return os.Open(real)
}

// ImportFailure is the answer to a file that could not be imported.
type ImportFailure struct {
	Error  string `json:"error"`
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
	Name   string `json:"columnName,omitempty"`
}

func importError(w http.ResponseWriter, err error) {
	var ie *ImportError
	switch {
	case errors.As(err, &ie):
		adminJSON(w, http.StatusUnprocessableEntity, ImportFailure{Error: err.Error(), File: ie.File, Line: ie.Line, Column: ie.Column, Name: ie.ColumnName})
	case errors.Is(err, ErrBusy):
		adminError(w, http.StatusConflict, err.Error())
	default:
		adminError(w, http.StatusInternalServerError, err.Error())
	}
}

func (a *admin) activate(w http.ResponseWriter, r *http.Request) {
	k, ok := a.kind(w, r)
	if !ok {
		return
	}
	n, err := strconv.ParseUint(r.PathValue("version"), 10, 64)
	if err != nil {
		adminError(w, http.StatusBadRequest, fmt.Sprintf("version: %q is not a number", r.PathValue("version")))
		return
	}
	before := a.activeVersion(k)
	var v Version
	if a.s.cluster != nil {
		v, err = a.s.cluster.activate(r.Context(), k, n, a.opts.Actor(r))
	} else {
		v, err = a.s.store.Activate(k, n, a.opts.Actor(r))
	}
	a.changed(w, r, before, v, err)
}

func (a *admin) rollback(w http.ResponseWriter, r *http.Request) {
	k, ok := a.kind(w, r)
	if !ok {
		return
	}
	before := a.activeVersion(k)
	var v Version
	var err error
	if a.s.cluster != nil {
		v, err = a.s.cluster.rollback(r.Context(), k, a.opts.Actor(r))
	} else {
		v, err = a.s.store.Rollback(k, a.opts.Actor(r))
	}
	a.changed(w, r, before, v, err)
}

func (a *admin) changed(w http.ResponseWriter, r *http.Request, before any, v Version, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		adminError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNoPrevious):
		adminError(w, http.StatusConflict, err.Error())
	case err != nil:
		adminError(w, http.StatusInternalServerError, err.Error())
	default:
		a.opts.RecordChange(r.Context(), before, v)
		adminJSON(w, http.StatusOK, v)
	}
}

// LookupResult is what the active data says about a postcode or practice.
type LookupResult struct {
	Versions string        `json:"versions"`
	Postcode *PostcodeArea `json:"postcode,omitempty"`
	SubICB   *SubICBArea   `json:"subICB,omitempty"`
	Practice *Practice     `json:"practice,omitempty"`
}

func (a *admin) lookup(w http.ResponseWriter, r *http.Request) {
	pc, code := r.URL.Query().Get("postcode"), r.URL.Query().Get("practice")
	if pc == "" && code == "" {
		adminError(w, http.StatusBadRequest, "postcode or practice: give at least one")
		return
	}
	var out LookupResult
	err := a.s.store.View(func(rd *Reader) error {
		out.Versions = rd.Label()
		if pc != "" {
			if _, ok := NormalisePostcode(pc); !ok {
				return fmt.Errorf("postcode: %q is not a postcode", pc)
			}
			area, ok, err := rd.Postcode(pc)
			if err != nil && !errors.Is(err, ErrNoData) {
				return err
			}
			if ok {
				out.Postcode = &area
				if s, ok, _ := rd.SubICB(area.SubICBGSS); ok {
					out.SubICB = &s
				}
			}
		}
		if code != "" {
			p, ok, err := rd.Practice(code)
			if err != nil && !errors.Is(err, ErrNoData) {
				return err
			}
			if ok {
				out.Practice = &p
			}
		}
		return nil
	})
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if out.Postcode == nil && out.Practice == nil {
		adminError(w, http.StatusNotFound, "not in the active reference data ("+out.Versions+")")
		return
	}
	adminJSON(w, http.StatusOK, out)
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	adminJSON(w, status, map[string]string{"error": msg})
}
