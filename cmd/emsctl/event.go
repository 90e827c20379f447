package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/fhir/profile"
)

func newEventCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "event",
		Aliases: []string{"events"},
		Short:   "Validate, publish and dry-run event messages",
		Example: `  emsctl event validate vaccinations-1-new.xml
  emsctl event match pds-change-of-address.xml
  emsctl event publish --asid 200000000112 pds-change-of-address.xml`,
	}
	cmd.AddCommand(newEventValidateCmd(), newEventPublishCmd(g), newEventMatchCmd(g))
	return cmd
}

func newEventValidateCmd() *cobra.Command {
	var relaxNHS, noProfiles bool
	var enable []string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Validate event messages offline with the server's rules",
		Example: `  emsctl event validate vaccinations-1-new.xml
  emsctl event validate --enable observations-1 observations-new.xml
  emsctl event validate --allow-invalid-nhs-number test-bundles/*.xml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cat := catalog.Default()
			if len(enable) > 0 {
				on := true
				o := map[string]catalog.Override{}
				for _, e := range enable {
					o[e] = catalog.Override{Enabled: &on}
				}
				var err error
				if cat, err = cat.Apply(o); err != nil {
					return &exitError{exitUsage, fmt.Errorf("--enable: %w", err)}
				}
			}
			v := &broker.Validator{Catalog: cat, CheckNHSNumber: !relaxNHS}
			if !noProfiles {
				pv, err := profile.Default()
				if err != nil {
					return &exitError{exitFailure, fmt.Errorf("loading profile rules: %w", err)}
				}
				v.Profiles = broker.ProfileValidatorFunc(func(root *fhir.Node, event string) []fhir.Issue {
					return pv.ValidateBundle(root, profile.BundleOptions{Event: event})
				})
			}
			invalid := 0
			for _, f := range args {
				if !validateFile(cmd.OutOrStdout(), v, f) {
					invalid++
				}
			}
			if invalid > 0 {
				return &exitError{exitFailure, fmt.Errorf("%d of %d files invalid", invalid, len(args))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&relaxNHS, "allow-invalid-nhs-number", false, "accept NHS numbers failing the Modulus 11 check (test data only)")
	cmd.Flags().BoolVar(&noProfiles, "no-profiles", false, "check the NEMS message rules only, not the CareConnect/EMS profiles (as emsd with publish.validate_profiles: false)")
	cmd.Flags().StringSliceVar(&enable, "enable", nil, "enable draft or DCH event types, as a deployment's configuration would")
	return cmd
}

// validateFile prints the issues of one file and reports whether it is valid.
func validateFile(w io.Writer, v *broker.Validator, path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(w, "%s: %v\n", path, err)
		return false
	}
	format := fhir.Sniff(data)
	root, err := fhir.Parse(data, format, fhir.DefaultLimits())
	if err != nil {
		fmt.Fprintf(w, "%s: error %s: %v\n", path, fhir.MessageNotWellFormed, err)
		return false
	}
	var issues []fhir.Issue
	if format == fhir.FormatXML {
		issues = fhir.CheckElementOrder(root)
	}
	msg, found := v.Validate(root)
	issues = append(issues, found...)
	ok := true
	for _, i := range issues {
		if i.IsError() {
			ok = false
		}
		fmt.Fprintf(w, "%s: %s %s %s: %s\n", path, i.Severity, i.Code, i.Expression, i.Diagnostics)
	}
	if ok {
		fmt.Fprintf(w, "%s: valid %s %s for %s\n", path, msg.Event.Code, msg.MessageEventType, maskNHS(msg.NHSNumber))
	}
	return ok
}

// maskNHS shows only the last three digits of an NHS number.
func maskNHS(n string) string {
	if len(n) < 3 {
		return n
	}
	return "*******" + n[len(n)-3:]
}
