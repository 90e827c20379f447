package catalog

var (
	newOnly         = []string{"new"}
	newDelete       = []string{"new", "delete"}
	newUpdateDelete = []string{"new", "update", "delete"}
)

// defaultEvents is every code of EventType-1 v1.3.0 (54): events.md §2 (the
// supported table), §4 (NEMS drafts and legacy codes) and §5 (the DCH
// catalogue). Only the supported ones are enabled; a deployment enables others
// through configuration (Catalog.Apply).
var defaultEvents = []Event{
	// Supported by NEMS (events.md §2): enabled by default.
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

	// NEMS drafts (events.md §4): defined on the unreleased branch
	// feature/DCH_Release_Changes, never in the supported table.
	//
	// Failsafe messages are published by the National Failsafe Management
	// Service (X26) itself, so they are subscribe-only. Their WorkflowIDs are not
	// given anywhere; they follow the FAILSAFEMESSAGERESPONSE…_1 pattern of the
	// responses.
	{Code: "failsafe-message-gp-1", Display: "Failsafe Message GP", WorkflowID: "FAILSAFEMESSAGEGP_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-hvs-1", Display: "Failsafe Message HVS", WorkflowID: "FAILSAFEMESSAGEHVS_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-bloodspot-outcome-1", Display: "Failsafe Message Bloodspot Outcome", WorkflowID: "FAILSAFEMESSAGEBLOODSPOTOUTCOME_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-nipe-newborn-1", Display: "Failsafe Message NIPE Newborn", WorkflowID: "FAILSAFEMESSAGENIPENEWBORN_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-newborn-hearing-1", Display: "Failsafe Message Newborn Hearing", WorkflowID: "FAILSAFEMESSAGENEWBORNHEARING_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Task", Tier: Draft, State: Active},
	// Responses come back from GP practices and health visitors through the
	// publish API, so they are publishable; the PublishCode is derived (see
	// derivedPublishCode in the tests).
	{Code: "failsafe-message-response-gp-1", Display: "Failsafe Message Response GP", PublishCode: "Failsafemessageresponsegp", WorkflowID: "FAILSAFEMESSAGERESPONSEGP_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-response-hvs-1", Display: "Failsafe Message Response HVS", PublishCode: "Failsafemessageresponsehvs", WorkflowID: "FAILSAFEMESSAGERESPONSEHVS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-response-bloodspot-outcome-1", Display: "Failsafe Message Response Bloodspot Outcome", PublishCode: "Failsafemessageresponsebloodspotoutcome", WorkflowID: "FAILSAFEMESSAGERESPONSEBLOODSPOTOUTCOME_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-response-nipe-newborn-1", Display: "Failsafe Message Response NIPE Newborn", PublishCode: "Failsafemessageresponsenipenewborn", WorkflowID: "FAILSAFEMESSAGERESPONSENIPENEWBORN_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Task", Tier: Draft, State: Active},
	{Code: "failsafe-message-response-newborn-hearing-1", Display: "Failsafe Message Response Newborn Hearing", PublishCode: "Failsafemessageresponsenewbornhearing", WorkflowID: "FAILSAFEMESSAGERESPONSENEWBORNHEARING_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Task", Tier: Draft, State: Active},
	// DCH events that reached a NEMS draft page, with that page's WorkflowID
	// and focus rather than the DCH Encounter focus.
	{Code: "allergies-and-adverse-reactions-1", Display: "Allergies and Adverse Reactions", PublishCode: "Allergiesandadversereactions", WorkflowID: "ALLERGIES_ADVERSE_REACTIONS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "AllergyIntolerance", Tier: Draft, State: Active},
	{Code: "observations-1", Display: "Observations", PublishCode: "Observations", WorkflowID: "OBSERVATIONS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Observation", Tier: Draft, State: Active},
	{Code: "legal-information-1", Display: "Legal Information", PublishCode: "Legalinformation", WorkflowID: "LEGAL_INFORMATION_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Observation", Tier: Draft, State: Active},

	// Legacy (events.md §4): the 2017 EMS failsafe alerts FM001/FM002, superseded
	// by failsafe-message-*. The 2017 examples put a Communication in focus and
	// only ever send "new"; the WorkflowIDs are derived.
	{Code: "national-population-failsafe-alert-1", Display: "National Population Failsafe Alert", WorkflowID: "NATIONALPOPULATIONFAILSAFEALERT_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Legacy, State: Active},
	{Code: "national-population-failsafe-alert-nullify-1", Display: "National Population Failsafe Alert Nullify", WorkflowID: "NATIONALPOPULATIONFAILSAFEALERTNULLIFY_1", Publishable: false, Subscribable: true, MessageEventTypes: newOnly, Focus: "Communication", Tier: Legacy, State: Active},

	// The Digital Child Health catalogue (events.md §5.2) minus the codes above
	// and the supported ones. Every DCH event has an Encounter in focus. Neither
	// a publish InteractionID code nor a WorkflowID was ever published for them,
	// so both are derived from the code the way the live NEMS values are:
	// blood-spot-test-outcome-1 → Bloodspottestoutcome / BLOODSPOTTESTOUTCOME_1
	// (drop the "-1" version suffix and the hyphens; capitalise the first letter
	// for the InteractionID, upper-case everything and append "_1" for MESH).
	{Code: "additional-demographics-1", Display: "Additional Demographics", PublishCode: "Additionaldemographics", WorkflowID: "ADDITIONALDEMOGRAPHICS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "admission-details-1", Display: "Admission Details", PublishCode: "Admissiondetails", WorkflowID: "ADMISSIONDETAILS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "assessment-scales-1", Display: "Assessment Scales", PublishCode: "Assessmentscales", WorkflowID: "ASSESSMENTSCALES_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "birth-details-1", Display: "Birth Details", PublishCode: "Birthdetails", WorkflowID: "BIRTHDETAILS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "blood-spot-sample-taken-1", Display: "Blood Spot Sample Taken", PublishCode: "Bloodspotsampletaken", WorkflowID: "BLOODSPOTSAMPLETAKEN_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "clinical-risk-factors-1", Display: "Clinical Risk Factors", PublishCode: "Clinicalriskfactors", WorkflowID: "CLINICALRISKFACTORS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "problem-list-1", Display: "Problem List", PublishCode: "Problemlist", WorkflowID: "PROBLEMLIST_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "discharge-details-1", Display: "Discharge Details", PublishCode: "Dischargedetails", WorkflowID: "DISCHARGEDETAILS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "early-years-progress-1", Display: "Early Years Progress", PublishCode: "Earlyyearsprogress", WorkflowID: "EARLYYEARSPROGRESS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "emergency-care-attendance-1", Display: "Emergency Care Attendance", PublishCode: "Emergencycareattendance", WorkflowID: "EMERGENCYCAREATTENDANCE_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "examination-findings-1", Display: "Examination Findings", PublishCode: "Examinationfindings", WorkflowID: "EXAMINATIONFINDINGS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "family-history-1", Display: "Family History", PublishCode: "Familyhistory", WorkflowID: "FAMILYHISTORY_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "feeding-status-1", Display: "Feeding Status", PublishCode: "Feedingstatus", WorkflowID: "FEEDINGSTATUS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "individual-requirements-1", Display: "Individual Requirements", PublishCode: "Individualrequirements", WorkflowID: "INDIVIDUALREQUIREMENTS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "information-and-advice-given-1", Display: "Information and Advice Given", PublishCode: "Informationandadvicegiven", WorkflowID: "INFORMATIONANDADVICEGIVEN_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "medication-statement-1", Display: "Medication Statement", PublishCode: "Medicationstatement", WorkflowID: "MEDICATIONSTATEMENT_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "developmental-skills-1", Display: "Developmental Skills", PublishCode: "Developmentalskills", WorkflowID: "DEVELOPMENTALSKILLS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "parent-guardian-or-personal-comment-1", Display: "Parent Guardian or Personal Comment", PublishCode: "Parentguardianorpersonalcomment", WorkflowID: "PARENTGUARDIANORPERSONALCOMMENT_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "personal-contacts-1", Display: "Personal Contacts", PublishCode: "Personalcontacts", WorkflowID: "PERSONALCONTACTS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "plan-and-requested-actions-1", Display: "Plan and Requested Actions", PublishCode: "Planandrequestedactions", WorkflowID: "PLANANDREQUESTEDACTIONS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "professional-summary-1", Display: "Professional Summary", PublishCode: "Professionalsummary", WorkflowID: "PROFESSIONALSUMMARY_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "referral-1", Display: "Referral", PublishCode: "Referral", WorkflowID: "REFERRAL_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "safety-alerts-1", Display: "Safety Alerts", PublishCode: "Safetyalerts", WorkflowID: "SAFETYALERTS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "social-context-household-1", Display: "Social Context Household", PublishCode: "Socialcontexthousehold", WorkflowID: "SOCIALCONTEXTHOUSEHOLD_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "social-context-1", Display: "Social Context", PublishCode: "Socialcontext", WorkflowID: "SOCIALCONTEXT_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "educational-history-1", Display: "Educational History", PublishCode: "Educationalhistory", WorkflowID: "EDUCATIONALHISTORY_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "blood-spot-card-received-1", Display: "Blood Spot Card Received", PublishCode: "Bloodspotcardreceived", WorkflowID: "BLOODSPOTCARDRECEIVED_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "medication-administration-1", Display: "Medication Administration", PublishCode: "Medicationadministration", WorkflowID: "MEDICATIONADMINISTRATION_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
	{Code: "investigation-results-1", Display: "Investigation Results", PublishCode: "Investigationresults", WorkflowID: "INVESTIGATIONRESULTS_1", Publishable: true, Subscribable: true, MessageEventTypes: newUpdateDelete, Focus: "Encounter", Tier: DCH, State: Active},
}
