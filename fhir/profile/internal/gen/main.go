// Command gen compiles the StructureDefinitions, ValueSets and CodeSystems of
// a conformance folder (laid out as described in ../../SOURCES.md) into the
// rule file embedded by package profile. Run through go generate:
//
//	go run ./internal/gen -src ../../../shared/conformance -out rules.gob.gz
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ems-broker/ems/fhir/profile/internal/build"
)

func main() {
	src := flag.String("src", "", "conformance folder (careconnect/, ems/, terminology/, stu3-core/)")
	out := flag.String("out", "rules.gob.gz", "output file")
	flag.Parse()
	if err := build.Run(*src, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
