package scaleout

import "github.com/shopguard/shopguard/ingest/order"

// The scale-out runtime orders events with the same merge as the
// single-process source (ingest/order). Every stage processes events in
// the order of their key, whichever instance reads them and however the
// internal topics interleave them; a flag published by the source stage
// carries the key of the failed login that raised it, so the account stage
// merges flags into the same order.
//
// A heartbeat of the repartitioner of one input partition is its
// watermark; idle says the repartitioner had read the input partition to
// its end and found nothing new for the idle timeout. A task's order buffer
// is the state of the task besides its engine, and is checkpointed with
// it.
type (
	scaleKey   = order.Key
	scaleItem  = order.Item[[]byte] // V: the audit event's JSON, as the producer wrote it
	scaleOrder = order.Order[[]byte]
)

var (
	scaleKeyMin = order.Min
	scaleKeyMax = order.Max
	minKey      = order.MinKey
)

func newScaleOrder(inputs int) *scaleOrder { return order.New[[]byte](inputs) }
