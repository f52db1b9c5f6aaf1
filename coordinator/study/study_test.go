package study

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/queries"
)

func TestAModelForOneAssociationIsRefusedAtSubmission(t *testing.T) {
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		t.Fatal(err)
	}
	fed := []string{"hbs", "varna", "roslagen"}
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	req := &Request{Title: "t", Purpose: "p", Associations: []string{"hbs"}, Queries: []QueryReq{{ID: "what_works", Params: period}}}
	if _, err := Validate(req, cat, fed, "eva", time.Now()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "two or more associations") {
		t.Fatalf("a model for one association: %v", err)
	}
	req.Associations = []string{"hbs", "varna"}
	if _, err := Validate(req, cat, fed, "eva", time.Now()); err != nil {
		t.Fatalf("a model for two associations: %v", err)
	}
	req.Associations = []string{"hbs"}
	req.Queries = []QueryReq{{ID: "time_to_work", Params: period}}
	if _, err := Validate(req, cat, fed, "eva", time.Now()); err != nil {
		t.Fatalf("a survival table for one association: %v", err)
	}
}
