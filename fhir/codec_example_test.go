package fhir_test

import (
	"errors"
	"fmt"

	"github.com/ems-broker/ems/fhir"
)

func Example() {
	body := []byte(`<Patient xmlns="http://hl7.org/fhir">
  <name><given value="Jack"/><family value="Dawkins"/></name>
  <birthDate value="2017-10-02"/>
</Patient>`)
	root, err := fhir.ParseXML(body, fhir.DefaultLimits())
	if err != nil {
		panic(err)
	}
	for _, is := range fhir.CheckElementOrder(root) {
		fmt.Println(is.Expression, "-", is.Diagnostics)
	}
	js, _ := fhir.MarshalJSON(root)
	fmt.Println(string(js))
	// Output:
	// Patient.name[0].family - element family is out of order: it must come before given (line 2); STU3 HumanName order is: family, given
	// {"resourceType":"Patient","name":[{"given":["Jack"],"family":"Dawkins"}],"birthDate":"2017-10-02"}
}

func ExampleDecodeError() {
	_, err := fhir.ParseJSON([]byte(`{"resourceType":"Patient","name":[{"colour":"red"}]}`), fhir.Limits{})
	var de *fhir.DecodeError
	if errors.As(err, &de) {
		fmt.Println(de.Line, de.Col, de.Path)
		fmt.Println(de.Msg)
	}
	// Output:
	// 1 36 Patient.name[0].colour
	// unknown property "colour" in HumanName
}

func ExampleLookupElement() {
	c, _ := fhir.LookupElement("Bundle", "entry.link")
	fmt.Println(c.Type.Name, c.Element.Repeats(), c.Element.Order)
	c, _ = fhir.LookupElement("Observation", "valueQuantity.value")
	fmt.Println(c.Type.Name, c.Type.JSON == fhir.JSONNumber)
	// Output:
	// Bundle.link true 3
	// decimal true
}
