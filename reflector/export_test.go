package reflector

// Exported for the external tests: the fields the cache evaluates field
// selectors with, which fields_test compares with the apiserver's.
var (
	PodFieldsForTest   = podFields
	EventFieldsForTest = eventFields
)

// FailuresForTest is how many times the factory's caches have entered
// failed: Failed closes on the first, and the rule table says one entry
// per failure, not one per evaluation.
func FailuresForTest(f *Factory) int {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	return f.failures
}
