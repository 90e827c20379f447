// Package build reads a conformance folder and writes the compiled rule file;
// it is shared by the go:generate command and the test that checks the
// embedded file is current.
package build

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/compile"
	"github.com/ems-broker/ems/fhir/profile/internal/invariant"
	"github.com/ems-broker/ems/fhir/profile/internal/load"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// CoreResources are the base resource types compiled besides those the NHS
// profiles reach: every type an event message may carry.
var CoreResources = []string{
	"Bundle", "MessageHeader", "Patient", "Practitioner", "PractitionerRole", "Organization", "Location",
	"Encounter", "AllergyIntolerance", "Medication", "MedicationRequest", "Condition", "FamilyMemberHistory",
	"Immunization", "Observation", "Procedure", "CareTeam", "Communication", "DiagnosticReport", "EpisodeOfCare",
	"HealthcareService", "RelatedPerson", "ProcedureRequest", "ReferralRequest", "Specimen", "Task", "Provenance",
	"OperationOutcome", "Subscription", "Device", "Flag", "Basic",
}

// Unchecked are value sets over external code systems that cannot be
// expanded offline; codes bound to them are accepted unchecked.
var Unchecked = []string{
	"http://hl7.org/fhir/ValueSet/mimetypes",      // BCP-13
	"http://www.rfc-editor.org/bcp/bcp13.txt",     // BCP-13 (CareConnect URL)
	"http://hl7.org/fhir/ValueSet/languages",      // BCP-47
	"http://hl7.org/fhir/ValueSet/all-languages",  // BCP-47
	"http://hl7.org/fhir/ValueSet/ucum-units",     // UCUM
	"http://terminology.hl7.org/ValueSet/v2-0916", // R4 URL, not published for STU3
	"http://hl7.org/fhir/ValueSet/currencies",     // ISO 4217
}

// Sources reads every conformance resource under dir.
func Sources(dir string) ([]*fhir.Node, []string, error) {
	var nodes []*fhir.Node
	var roots []string
	for _, sub := range []string{"careconnect", "ems", "terminology", "stu3-core/resources", "stu3-core/terminology", "stu3-core"} {
		files, err := filepath.Glob(filepath.Join(dir, sub, "*"))
		if err != nil {
			return nil, nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			if !strings.HasSuffix(f, ".xml") && !strings.HasSuffix(f, ".json") || strings.HasSuffix(f, "schema.json") || strings.HasSuffix(f, "package.json") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, nil, err
			}
			n, err := load.Bytes(data)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", f, err)
			}
			nodes = append(nodes, n)
			if (sub == "careconnect" || sub == "ems") && n.ResourceType == "StructureDefinition" {
				roots = append(roots, n.Str("url"))
			}
		}
	}
	return nodes, roots, nil
}

// Compile compiles the NHS profiles of dir together with CoreResources.
func Compile(dir string) (*rules.Set, error) {
	nodes, roots, err := Sources(dir)
	if err != nil {
		return nil, err
	}
	return compile.Compile(nodes, compile.Options{
		Roots:     append(roots, CoreResources...),
		Invariant: invariant.Supported,
		Unchecked: Unchecked,
	})
}

// Run compiles dir and writes the rule file to out.
func Run(dir, out string) error {
	set, err := Compile(dir)
	if err != nil {
		return err
	}
	data, err := rules.Encode(set)
	if err != nil {
		return fmt.Errorf("encoding rules: %w", err)
	}
	return os.WriteFile(out, data, 0o644)
}
