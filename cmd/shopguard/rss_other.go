//go:build !unix

package main

// maxRSSKiB is 0: the peak resident set size is read with getrusage, which
// this system does not have; bench reports no peak RSS here.
func maxRSSKiB() int64 { return 0 }
