package reflector

// Exported for the external tests: the fields the cache evaluates field
// selectors with, which fields_test compares with the apiserver's.
var (
	PodFieldsForTest   = podFields
	EventFieldsForTest = eventFields
)
