//go:build unix

package detect

import (
	"fmt"
	"syscall"
)

// allocChunk maps n bytes of anonymous memory, as fastcache does for its
// buckets: the kernel backs a page only once it is written.
func allocChunk(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(fmt.Errorf("detect: cannot map %d bytes for account state: %w", n, err))
	}
	return b
}

func freeChunk(b []byte) {
	if err := syscall.Munmap(b); err != nil {
		panic(fmt.Errorf("detect: cannot unmap account state: %w", err))
	}
}
