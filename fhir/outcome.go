package fhir

import (
	"net/http"
	"strings"
)

// SpineCodeSystem is the code system of every error or warning code we emit.
// Spine Core examples use the ValueSet URL by mistake; readers should accept
// both, we only ever write this one.
const SpineCodeSystem = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"

// SpineOperationOutcomeProfile is the profile our OperationOutcomes claim.
const SpineOperationOutcomeProfile = "https://fhir.nhs.uk/STU3/StructureDefinition/Spine-OperationOutcome-1"

// SpineCode is a code of Spine-ErrorOrWarningCode-1.
type SpineCode string

// The Spine codes this service emits. The table below gives each its display,
// HTTP status and FHIR issue type, so that no handler picks a status itself.
const (
	Deprecated                 SpineCode = "DEPRECATED"
	NoLongerSupported          SpineCode = "NO_LONGER_SUPPORTED"
	Withdrawn                  SpineCode = "WITHDRAWN"
	InvalidNHSNumber           SpineCode = "INVALID_NHS_NUMBER"
	InvalidPatientDemographics SpineCode = "INVALID_PATIENT_DEMOGRAPHICS"
	OrganisationNotFound       SpineCode = "ORGANISATION_NOT_FOUND"
	NoRecordFound              SpineCode = "NO_RECORD_FOUND"
	RequestUnmatched           SpineCode = "REQUEST_UNMATCHED"
	AccessDenied               SpineCode = "ACCESS_DENIED"
	ASIDCheckFailed            SpineCode = "ASID_CHECK_FAILED"
	MissingOrInvalidHeader     SpineCode = "MISSING_OR_INVALID_HEADER"
	BadRequest                 SpineCode = "BAD_REQUEST"
	MessageNotWellFormed       SpineCode = "MESSAGE_NOT_WELL_FORMED"
	InvalidRequestMessage      SpineCode = "INVALID_REQUEST_MESSAGE"
	InvalidIdentifierSystem    SpineCode = "INVALID_IDENTIFIER_SYSTEM"
	InvalidIdentifierValue     SpineCode = "INVALID_IDENTIFIER_VALUE"
	InvalidCodeSystem          SpineCode = "INVALID_CODE_SYSTEM"
	InvalidCodeValue           SpineCode = "INVALID_CODE_VALUE"
	InvalidElement             SpineCode = "INVALID_ELEMENT"
	InvalidValue               SpineCode = "INVALID_VALUE"
	ConflictingValues          SpineCode = "CONFLICTING_VALUES"
	InvalidResource            SpineCode = "INVALID_RESOURCE"
	InvalidParameter           SpineCode = "INVALID_PARAMETER"
	ReferenceNotFound          SpineCode = "REFERENCE_NOT_FOUND"
	DuplicateRejected          SpineCode = "DUPLICATE_REJECTED"
	MsgResourceIDFail          SpineCode = "MSG_RESOURCE_ID_FAIL"
	FHIRConstraintViolation    SpineCode = "FHIR_CONSTRAINT_VIOLATION"
	UnsupportedMediaType       SpineCode = "UNSUPPORTED_MEDIA_TYPE"
	PreconditionFailed         SpineCode = "PRECONDITION_FAILED"
	NotImplemented             SpineCode = "NOT_IMPLEMENTED"
	InternalServerError        SpineCode = "INTERNAL_SERVER_ERROR"
	ResourceDeleted            SpineCode = "RESOURCE_DELETED"
	// TooManyRequests has no Spine code; the issue carries only the FHIR
	// issue type "throttled" and the display below.
	TooManyRequests SpineCode = "TOO_MANY_REQUESTS"
	// PayloadTooLarge reuses INVALID_REQUEST_MESSAGE with status 413.
	PayloadTooLarge SpineCode = "PAYLOAD_TOO_LARGE"
	// MethodNotAllowed is an issue without a Spine code (errors.md §2).
	MethodNotAllowed SpineCode = "METHOD_NOT_ALLOWED"
)

// codeInfo is one row of the error table.
type codeInfo struct {
	wire      string // the code written on the wire (PayloadTooLarge → INVALID_REQUEST_MESSAGE)
	display   string
	status    int
	issueType string
}

// spineCodes is the one table mapping a Spine code to its display (from the
// CodeSystem), HTTP status and FHIR issue type (errors.md §1 and §3).
var spineCodes = map[SpineCode]codeInfo{
	Deprecated:                 {"", "Event message type has been deprecated", http.StatusAccepted, "informational"},
	NoLongerSupported:          {"", "Event message type is no longer supported", http.StatusUnprocessableEntity, "not-supported"},
	Withdrawn:                  {"", "Event message type has been withdrawn", http.StatusUnprocessableEntity, "not-supported"},
	InvalidNHSNumber:           {"", "Invalid NHS number", http.StatusBadRequest, "value"},
	InvalidPatientDemographics: {"", "Invalid patient demographics", http.StatusBadRequest, "business-rule"},
	OrganisationNotFound:       {"", "Organisation not found", http.StatusNotFound, "not-found"},
	NoRecordFound:              {"", "No record found", http.StatusNotFound, "not-found"},
	RequestUnmatched:           {"", "Request does not match authorisation token", http.StatusBadRequest, "invalid"},
	AccessDenied:               {"", "Access has been denied to process this request", http.StatusForbidden, "forbidden"},
	ASIDCheckFailed:            {"", "The sender or receiver's ASID is not authorised for this interaction", http.StatusForbidden, "forbidden"},
	MissingOrInvalidHeader:     {"", "There is a required header missing or invalid", http.StatusBadRequest, "invalid"},
	BadRequest:                 {"", "Bad request", http.StatusBadRequest, "invalid"},
	MessageNotWellFormed:       {"", "Message not well formed", http.StatusBadRequest, "structure"},
	InvalidRequestMessage:      {"", "Invalid request message", http.StatusBadRequest, "value"},
	InvalidIdentifierSystem:    {"", "Invalid identifier system", http.StatusBadRequest, "value"},
	InvalidIdentifierValue:     {"", "Invalid identifier value", http.StatusBadRequest, "value"},
	InvalidCodeSystem:          {"", "Invalid code system", http.StatusBadRequest, "code-invalid"},
	InvalidCodeValue:           {"", "Invalid code value", http.StatusBadRequest, "code-invalid"},
	InvalidElement:             {"", "Invalid element", http.StatusBadRequest, "value"},
	InvalidValue:               {"", "An input field has an invalid value for its type", http.StatusBadRequest, "value"},
	ConflictingValues:          {"", "Conflicting values have been specified in different fields", http.StatusBadRequest, "business-rule"},
	InvalidResource:            {"", "Invalid validation of resource", http.StatusUnprocessableEntity, "invalid"},
	InvalidParameter:           {"", "Invalid parameter", http.StatusUnprocessableEntity, "invalid"},
	ReferenceNotFound:          {"", "Reference not found", http.StatusUnprocessableEntity, "invalid"},
	DuplicateRejected:          {"", "Create would lead to creation of a duplicate resource", http.StatusUnprocessableEntity, "duplicate"},
	MsgResourceIDFail:          {"", "Client is not permitted to assign an id", http.StatusMethodNotAllowed, "forbidden"},
	FHIRConstraintViolation:    {"", "FHIR constraint violated", http.StatusUnprocessableEntity, "invariant"},
	UnsupportedMediaType:       {"", "Unsupported media type", http.StatusUnsupportedMediaType, "not-supported"},
	PreconditionFailed:         {"", "Precondition failed", http.StatusPreconditionFailed, "conflict"},
	NotImplemented:             {"", "Not implemented", http.StatusNotImplemented, "not-supported"},
	InternalServerError:        {"", "Unexpected internal server error", http.StatusInternalServerError, "exception"},
	ResourceDeleted:            {"", "Resource removed", http.StatusOK, "informational"},
	TooManyRequests:            {"-", "Too many requests", http.StatusTooManyRequests, "throttled"},
	PayloadTooLarge:            {string(InvalidRequestMessage), "Invalid request message", http.StatusRequestEntityTooLarge, "too-costly"},
	MethodNotAllowed:           {"-", "Method not allowed", http.StatusMethodNotAllowed, "not-supported"},
}

// HTTPStatus is the status an error with this code is answered with.
func (c SpineCode) HTTPStatus() int {
	if info, ok := spineCodes[c]; ok {
		return info.status
	}
	return http.StatusInternalServerError
}

// IssueType is the FHIR issue-type code that goes with this Spine code.
func (c SpineCode) IssueType() string {
	if info, ok := spineCodes[c]; ok {
		return info.issueType
	}
	return "exception"
}

// Display is the CodeSystem display text.
func (c SpineCode) Display() string { return spineCodes[c].display }

// wire returns the code as written in details.coding.code, or "" when the
// issue carries no Spine coding.
func (c SpineCode) wire() string {
	info := spineCodes[c]
	switch info.wire {
	case "":
		return string(c)
	case "-":
		return ""
	default:
		return info.wire
	}
}

// Severity of an OperationOutcome issue.
type Severity string

// Severities used by this service.
const (
	SeverityFatal       Severity = "fatal"
	SeverityError       Severity = "error"
	SeverityWarning     Severity = "warning"
	SeverityInformation Severity = "information"
)

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity Severity
	Code     SpineCode
	// IssueType overrides the issue type of Code when set (the profile
	// validator reports "required", "structure", "code-invalid" ... with
	// the Spine code INVALID_RESOURCE).
	IssueType   string
	Diagnostics string
	// Expression is the FHIRPath location of the offending element, e.g.
	// "Bundle.entry[2].resource.identifier[0].value". Written to both
	// issue.expression and issue.location (STU3 has both; clients read one
	// or the other).
	Expression string
}

// Type is the issue type written on the wire.
func (i Issue) Type() string {
	if i.IssueType != "" {
		return i.IssueType
	}
	return i.Code.IssueType()
}

// IsError tells whether the issue makes the request fail.
func (i Issue) IsError() bool {
	return i.Severity == SeverityError || i.Severity == SeverityFatal
}

// Outcome is a list of issues with the HTTP status they are answered with.
type Outcome struct {
	ID     string
	Issues []Issue
}

// Errors reports whether any issue is an error.
func (o *Outcome) Errors() bool {
	for _, i := range o.Issues {
		if i.IsError() {
			return true
		}
	}
	return false
}

// Add appends an issue.
func (o *Outcome) Add(i Issue) { o.Issues = append(o.Issues, i) }

// Errorf appends an error issue.
func (o *Outcome) Error(code SpineCode, expression, diagnostics string) {
	o.Add(Issue{Severity: SeverityError, Code: code, Expression: expression, Diagnostics: diagnostics})
}

// HTTPStatus is the status of the first error issue (the most fundamental
// failure: checks run from transport to content), or 200 when none.
func (o *Outcome) HTTPStatus() int {
	for _, i := range o.Issues {
		if i.IsError() {
			return i.Code.HTTPStatus()
		}
	}
	return http.StatusOK
}

// Node renders the outcome as an OperationOutcome resource in the
// Spine-OperationOutcome-1 shape.
func (o *Outcome) Node() *Node {
	root := &Node{Name: "OperationOutcome", ResourceType: "OperationOutcome"}
	if o.ID != "" {
		root.Children = append(root.Children, Prim("id", o.ID))
	}
	root.Children = append(root.Children, &Node{Name: "meta", Children: []*Node{Prim("profile", SpineOperationOutcomeProfile)}})
	for _, is := range o.Issues {
		issue := &Node{Name: "issue"}
		issue.Children = append(issue.Children, Prim("severity", string(is.Severity)), Prim("code", is.Type()))
		if code := is.Code.wire(); code != "" {
			issue.Children = append(issue.Children, &Node{Name: "details", Children: []*Node{
				{Name: "coding", Children: []*Node{
					Prim("system", SpineCodeSystem),
					Prim("code", code),
					Prim("display", is.Code.Display()),
				}},
			}})
		} else {
			issue.Children = append(issue.Children, &Node{Name: "details", Children: []*Node{Prim("text", is.Code.Display())}})
		}
		if is.Diagnostics != "" {
			issue.Children = append(issue.Children, Prim("diagnostics", sanitise(is.Diagnostics)))
		}
		if is.Expression != "" {
			issue.Children = append(issue.Children, Prim("location", is.Expression), Prim("expression", is.Expression))
		}
		root.Children = append(root.Children, issue)
	}
	return root
}

// Prim builds a primitive element.
func Prim(name, value string) *Node { return &Node{Name: name, Value: value, HasValue: true} }

// sanitise keeps diagnostics to one printable line: they may quote client
// input, which must not be able to forge extra log or XML structure.
func sanitise(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return ' '
		}
		return r
	}, s)
}
