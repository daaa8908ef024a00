package bpf

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// TestLoad: a program the verifier refuses comes back named, with the
// verifier's log; resize runs before the kernel sees the spec.
func TestLoad(t *testing.T) {
	bpftest.Privileged(t)
	spec := func(insns asm.Instructions) func() (*ebpf.CollectionSpec, error) {
		return func() (*ebpf.CollectionSpec, error) {
			return &ebpf.CollectionSpec{
				Maps:     map[string]*ebpf.MapSpec{"counts": {Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1}},
				Programs: map[string]*ebpf.ProgramSpec{"prog": {Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}},
			}, nil
		}
	}
	var objs struct {
		Prog   *ebpf.Program `ebpf:"prog"`
		Counts *ebpf.Map     `ebpf:"counts"`
	}
	// R0 is never set: the verifier refuses to let it be returned.
	err := Load("bad program", spec(asm.Instructions{asm.Return()}), nil, &objs)
	if err == nil || !strings.Contains(err.Error(), "load bad program") || !strings.Contains(err.Error(), "verifier") {
		t.Fatalf("Load of a refused program: %v, want it named with the verifier's log", err)
	}

	resized := false
	err = Load("good program", spec(asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}), func(s *ebpf.CollectionSpec) {
		s.Maps["counts"].MaxEntries = 3
		resized = true
	}, &objs)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Prog.Close()
	defer objs.Counts.Close()
	if !resized || objs.Counts.MaxEntries() != 3 {
		t.Errorf("resize ran: %v, map of %d entries, want 3", resized, objs.Counts.MaxEntries())
	}
	perCPU := make([]uint64, ebpf.MustPossibleCPU())
	for i := range perCPU {
		perCPU[i] = uint64(i + 1)
	}
	if err := objs.Counts.Put(uint32(1), perCPU); err != nil {
		t.Fatal(err)
	}
	got, err := Counters("counts", objs.Counts, []string{"zero", "one"})
	n := uint64(len(perCPU))
	if err != nil || got["zero"] != 0 || got["one"] != n*(n+1)/2 {
		t.Errorf("Counters = %v, %v; want zero 0, one %d (summed over %d CPUs)", got, err, n*(n+1)/2, n)
	}
}
