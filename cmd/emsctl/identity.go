package main

import (
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

// callerFlags are the Spine identity a command presents to the public API
// when it acts as a publisher or subscriber system.
type callerFlags struct {
	asid, toASID, interaction, jwt string
	headers                        []string
}

func (f *callerFlags) bind(cmd *cobra.Command, role string) {
	fl := cmd.Flags()
	fl.StringVar(&f.asid, "asid", "", role+" system's ASID (sent as fromASID)")
	fl.StringVar(&f.toASID, "to-asid", "", "the service's ASID (sent as toASID), where the deployment checks it")
	fl.StringVar(&f.interaction, "interaction", "", "Spine InteractionID to send")
	fl.StringVar(&f.jwt, "jwt", "", "bearer JWT to send as Authorization, where the deployment requires one (env EMS_JWT)")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, `extra request header "Name: value" (repeatable)`)
}

// apply sets the identity headers on req.
func (f *callerFlags) apply(req *http.Request, env func(string) string) error {
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return usageErr(`--header %q: want "Name: value"`, h)
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	set := func(k, v string) {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	set("fromASID", f.asid)
	set("toASID", f.toASID)
	set("InteractionID", f.interaction)
	jwt := f.jwt
	if jwt == "" {
		jwt = env("EMS_JWT")
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	return nil
}
