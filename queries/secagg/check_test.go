package secagg

import (
	"errors"
	"reflect"
	"testing"
)

// check holds the few assertions these tests need, so the package's tests depend on the
// standard library alone.
type check struct{}

var require check

func (check) NoError(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
func (check) Error(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("expected an error")
	}
}
func (check) ErrorIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v: expected %v", err, target)
	}
}
func (check) Equal(t *testing.T, want, got any, msg ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("%v: expected %v, got %v", msg, want, got)
	}
}
func (check) NotEqual(t *testing.T, a, b any, msg ...any) {
	t.Helper()
	if reflect.DeepEqual(a, b) {
		t.Fatalf("%v: expected different values, both %v", msg, a)
	}
}
func (check) Zero(t *testing.T, n int, msg ...any) {
	t.Helper()
	if n != 0 {
		t.Fatalf("%v: expected 0, got %d", msg, n)
	}
}
func (check) Less(t *testing.T, a, b float64, msg ...any) {
	t.Helper()
	if !(a < b) {
		t.Fatalf("%v: expected %g < %g", msg, a, b)
	}
}
func (check) InDelta(t *testing.T, want, got, delta float64) {
	t.Helper()
	if d := want - got; d > delta || d < -delta {
		t.Fatalf("expected %g ± %g, got %g", want, delta, got)
	}
}
func (check) True(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.Fatal("expected true")
	}
}
func (check) False(t *testing.T, ok bool) {
	t.Helper()
	if ok {
		t.Fatal("expected false")
	}
}
