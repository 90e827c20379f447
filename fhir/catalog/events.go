package catalog

var (
	newOnly         = []string{"new"}
	newDelete       = []string{"new", "delete"}
	newUpdateDelete = []string{"new", "update", "delete"}
)

// defaultEvents is events.md §2 (the supported table), §4 (NEMS drafts) and §5
// (the DCH catalogue).
var defaultEvents = []Event{
	{Code: "blood-spot-test-outcome-1", Display: "Blood Spot Test Outcome", PublishCode: "Bloodspottestoutcome", WorkflowID: "BLOODSPOTTESTOUTCOME_1", Publishable: true, Subscribable: true, MessageEventTypes: newDelete, Focus: "Encounter", Tier: Supported, Enabled: true, State: Active},
	{Code: "newborn-hearing-1", Display: "Newborn Hearing", PublishCode: "Newbornhearing", WorkflowID: "NEWBORNHEARING_1", Publishable: true, Subscribable: true, MessageEventTypes: newDelete, Focus: "Encounter", Tier: Supported, Enabled: true, State: Active},
	{Code: "nipe-outcome-1", Display: "NIPE outcome", PublishCode: "Nipeoutcome", WorkflowID: "NIPEOUTCOME_1", Publishable: true, Subscribable: true, MessageEventTypes: newDelete, Focus: "Encounter", Tier: Supported, Enabled: true, State: Active},
	{Code: "pds-birth-notification-1", Display: "PDS Birth Notification", WorkflowID: "BIRTHNOTIFICATION_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Supported, Enabled: true, State: Active},
	{Code: "pds-change-of-address-1", Display: "PDS Change of Address", WorkflowID: "CHANGEOFADDRESS_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Supported, Enabled: true, State: Active},
	{Code: "pds-change-of-gp-1", Display: "PDS Change of GP", WorkflowID: "CHANGEOFGP_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Supported, Enabled: true, State: Active},
	{Code: "pds-death-notification-1", Display: "PDS Death Notification", WorkflowID: "DEATHNOTIFICATION_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Supported, Enabled: true, State: Active},
	{Code: "pds-record-change-1", Display: "PDS Record Change", WorkflowID: "PDSRECORDCHANGE_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Patient", Tier: Supported, Enabled: true, State: Active},
	{Code: "professional-contacts-1", Display: "Professional Contacts", PublishCode: "Professionalcontacts", WorkflowID: "PROFESSIONALCONTACTS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "EpisodeOfCare", Tier: Supported, Enabled: true, State: Active},
	{Code: "vaccinations-1", Display: "Vaccinations", PublishCode: "Vaccinations", WorkflowID: "VACCINATIONS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Immunization", Tier: Supported, Enabled: true, State: Active},
	// TODO(catalog): drafts (events.md §4) and the DCH catalogue (§5).
}
