package flightsrv

import (
	"errors"
	"strings"
	"testing"
)

func TestRedactDropsQuotedValues(t *testing.T) {
	err := errors.New(`Conversion Error: Could not convert string '3f9a0c1d2e4b5a69' to INT32 in column "participant_key"`)
	got := redact(err)
	if strings.Contains(got, "3f9a0c1d2e4b5a69") || strings.Contains(got, "participant_key") || !strings.Contains(got, "Could not convert string") {
		t.Fatalf("redact: %s", got)
	}
}
