//go:build !unix

package detect

// allocChunk allocates on the Go heap where memory cannot be mapped.
func allocChunk(n int) []byte { return make([]byte, n) }

func freeChunk([]byte) {}
