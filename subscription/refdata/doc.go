// Package refdata gives generic (rule-based) subscriptions the facts NEMS
// takes from PDS and the national geography files: which sub-ICB, local
// authority and country a postcode lies in (ONS postcode directory and the
// ONS sub-ICB lookup), which sub-ICB a GP practice belongs to (ODS
// epraccur), and a per-patient demographics record kept current from the
// PDS events themselves.
//
// Reference data is imported as versioned datasets: an import streams the
// file into a staging version in batches, and only when every row has been
// validated is the version activated by flipping one pointer, so readers
// never see a half-imported file and the previous version stays available
// for rollback.
package refdata
