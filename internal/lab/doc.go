// Package lab builds a throwaway L2 network of Linux network namespaces: a
// switch namespace holding a bridge, host namespaces each running the real
// arpshare binary, and client namespaces whose own kernels resolve and reach
// the VIP. The end-to-end tests and `go run ./examples/lab` share it.
// Nothing in it touches the root namespace's interfaces, addresses or routes.
package lab
