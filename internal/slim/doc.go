// Package slim is what reflector's caches keep of the objects they cache:
// the slim view of a pod ([Pod], [PodTransform]), of an event ([Event],
// [EventTransform]), and the managedFields strip of full pods
// ([StripManagedFields]).
//
// It is internal because no user needs it: a user reads slim pods from a
// PodCache (and from its API fallback, slimmed alike) and never builds one.
// Package events slims the events it lists itself with [Event], so that a
// listed event and a cached one are the same shape.
//
// Every function here is idempotent and leaves objects of other types
// untouched. Strings and whole values that many pods have alike are
// shared among the slim pods (intern.go): a slim pod must be copied
// (DeepCopy) before it is changed.
package slim
