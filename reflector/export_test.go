package reflector

// Exported for the external tests: the fields the cache evaluates field
// selectors with, which fields_test compares with the apiserver's.
var (
	PodFieldsForTest   = podFields
	EventFieldsForTest = eventFields
	// The pod caches' default transform, which slim_test checks on
	// tombstones and for idempotence.
	SlimPodTransformForTest = slimPodTransform
)
