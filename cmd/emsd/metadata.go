package main

import (
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// capabilityStatement describes what this server supports, for
// GET /STU3/metadata. It is built from the catalogue so that it never
// disagrees with what the server actually accepts.
func capabilityStatement(version string, started time.Time, cat *catalog.Catalog, allowJSON bool) *fhir.Node {
	n := func(name string, children ...*fhir.Node) *fhir.Node {
		return &fhir.Node{Name: name, Children: children}
	}
	p := fhir.Prim
	formats := []*fhir.Node{p("format", "application/fhir+xml")}
	if allowJSON {
		formats = append(formats, p("format", "application/fhir+json"))
	}
	root := &fhir.Node{Name: "CapabilityStatement", ResourceType: "CapabilityStatement"}
	root.Children = append(root.Children,
		p("status", "active"),
		p("date", started.UTC().Format(time.RFC3339)),
		p("publisher", "ems"),
		p("kind", "instance"),
		n("software", p("name", "emsd"), p("version", version)),
		n("implementation", p("description", "FHIR STU3 events management service (NEMS compatible)")),
		p("fhirVersion", "3.0.1"),
		p("acceptUnknown", "no"),
	)
	root.Children = append(root.Children, formats...)
	root.Children = append(root.Children,
		n("rest",
			p("mode", "server"),
			n("resource",
				p("type", "Subscription"),
				p("profile", "https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"),
				n("interaction", p("code", "read")),
				n("interaction", p("code", "update")),
				n("interaction", p("code", "delete")),
				n("interaction", p("code", "create")),
				n("interaction", p("code", "search-type")),
				p("versioning", "versioned"),
				p("conditionalUpdate", "false"),
				n("searchParam", p("name", "status"), p("type", "token")),
				n("searchParam", p("name", "contact"), p("type", "token")),
				n("searchParam", p("name", "url"), p("type", "uri")),
			),
			n("operation", p("name", "process-message"),
				n("definition", p("reference", "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"))),
		),
	)
	messaging := n("messaging")
	for _, e := range cat.All() {
		if !e.Enabled || !e.Publishable {
			continue
		}
		messaging.Children = append(messaging.Children, n("event",
			n("code", p("system", catalog.EventTypeSystem), p("code", e.Code), p("display", e.Display)),
			p("category", "Notification"),
			p("mode", "receiver"),
			p("focus", e.Focus),
			n("request", p("reference", "https://fhir.nhs.uk/STU3/StructureDefinition/Event-MessageHeader-1")),
			n("response", p("reference", "https://fhir.nhs.uk/STU3/StructureDefinition/Spine-OperationOutcome-1")),
		))
	}
	root.Children = append(root.Children, messaging)
	return root
}
