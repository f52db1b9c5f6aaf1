package nodetest

import (
	"database/sql"
	"strconv"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/schemas"
)

// Seed fills a store with n synthetic participants of association straight through SQL: enough rows for
// released cells, no personal identity numbers anywhere.
func Seed(t testing.TB, db *sql.DB, association string, n int) {
	t.Helper()
	mun, _ := schemas.V1().CodeList("municipality")
	codes := mun.Where("association", association)
	stmts := []string{
		"CREATE OR REPLACE TEMP TABLE seed_municipalities AS SELECT ['" + strings.Join(codes, "','") + "'] AS municipalities",
		"SELECT setseed(0.42)",
		`INSERT INTO participant SELECT md5('` + association + `' || i)[1:32], '` + association + `', municipalities[1 + i % len(municipalities)], NULL,
		   CASE WHEN random() < 0.58 THEN 'K' ELSE 'M' END, 1960 + (random() * 40)::INT, random() < 0.4,
		   ['pre_upper_secondary','upper_secondary','post_secondary','unknown'][1 + floor(random()*3.99)::INT],
		   ['AF','FK','KOMMUN','REGION','SELF','OTHER'][1 + floor(random()*5.99)::INT],
		   ['unemployment_benefit','activity_support','sickness_benefit','social_assistance','other'][1 + floor(random()*4.99)::INT],
		   ['lt1','1_4','ge5','unknown'][1 + floor(random()*3.99)::INT], true
		 FROM range(` + strconv.Itoa(n) + `) r(i), seed_municipalities`,
		`INSERT INTO episode SELECT participant_key, ['SE','IPS','PRE_REHAB','CASE_MANAGEMENT'][1 + floor(random()*3.99)::INT],
		   DATE '2020-06-01' + (random() * 500)::INT, NULL, NULL, NULL, NULL, NULL FROM participant`,
		`UPDATE episode SET exit_date = start_date + 30 + (random() * 300)::INT WHERE random() < 0.8`,
		`UPDATE episode SET exit_reason = 'completed', outcome = ['work','studies','job_seeking','ordinary_programme','other'][1 + floor(random()*4.99)::INT],
		   income_after = 'other' WHERE exit_date IS NOT NULL`,
		`INSERT INTO survey SELECT participant_key, 'indicator_exit', 'had_a_say', CASE WHEN random() < 0.9 THEN '5' ELSE '2' END FROM episode WHERE exit_date IS NOT NULL`,
		`INSERT INTO followup SELECT participant_key, date_trunc('month', start_date), 2 + (random()*3)::INT FROM episode`,
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s[:30], err)
		}
	}
}
