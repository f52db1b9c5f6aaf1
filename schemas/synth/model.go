package synth

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/samsyn/samsyn/schemas"
)

// The calibration below is invented to look like the MIA Vidare federation's published
// figures; it describes no real person. Weights name individual codes; the lists themselves
// always come from package schemas, and a code a list gains later gets the default weight.

// The study period of MIA Vidare.
var (
	PeriodStart = DateOf(2020, 6, 1)
	PeriodEnd   = DateOf(2022, 9, 30)
)

// DefaultParticipants is the federation total of the MIA Vidare project.
const DefaultParticipants = 1900

// Codes the model refers to by name. Each must exist in its list (checked when the model is
// built), so a renamed code fails loudly instead of silently dropping out of the data.
const (
	genderWoman       = "K"
	genderMan         = "M"
	stockholmCode     = "0180"
	outcomeWork       = "work"
	outcomeStudies    = "studies"
	outcomeSeeking    = "job_seeking"
	outcomeOther      = "other"
	groupWorkStudies  = "work_or_studies"
	groupOrdinary     = "ordinary_programme"
	exitCompleted     = "completed"
	exitMisregistered = "misregistered"
	instrumentOngoing = "indicator_ongoing"
	instrumentExit    = "indicator_exit"
	questionCloser    = "closer_to_work"
	incomeSocial      = "social_assistance"
	incomeNone        = "none_public"
	supportLong       = "ge5"
)

// associationShare is each association's rough share of the federation's participants, in
// per cent, after population.
var associationShare = map[string]float64{
	"stockholm": 30, "hbs": 15, "ostra-sodertorn": 11, "sodertalje": 10,
	"varna": 9, "roslagen": 9, "suvs": 9, "samsund": 7,
}

const defaultAssociationShare = 9

// municipalityWeight is the population in thousands (2021, rounded).
var municipalityWeight = map[string]float64{
	"0180": 978, "0126": 113, "0127": 95, "0128": 17, "0136": 96, "0192": 29, "0138": 48,
	"0181": 101, "0120": 45, "0182": 105, "0188": 63, "0160": 73, "0115": 34, "0117": 47,
	"0162": 33, "0187": 12, "0163": 75, "0114": 47, "0191": 49, "0183": 53, "0139": 30,
}

// cityDistrictWeight is population in thousands, doubled where unemployment is high.
var cityDistrictWeight = map[string]float64{
	"rinkeby-kista": 96, "spanga-tensta": 78, "hasselby-vallingby": 76, "bromma": 80,
	"kungsholmen": 70, "norrmalm": 73, "ostermalm": 73, "sodermalm": 135,
	"enskede-arsta-vantor": 104, "skarpnack": 49, "farsta": 60, "hagersten-alvsjo": 108,
	"skarholmen": 76,
}

var educationWeight = map[string]float64{
	"pre_upper_secondary": 28, "upper_secondary": 42, "post_secondary": 19, "unknown": 11,
}

// referralWeight: women are more often referred by Försäkringskassan, men by the municipality.
var referralWeight = map[string]map[string]float64{
	genderWoman: {"AF": 20, "FK": 34, "KOMMUN": 24, "REGION": 12, "SELF": 5, "OTHER": 5},
	genderMan:   {"AF": 26, "FK": 20, "KOMMUN": 36, "REGION": 8, "SELF": 5, "OTHER": 5},
}

// incomeBeforeWeight follows the referral party; "" is for any party not listed.
var incomeBeforeWeight = map[string]map[string]float64{
	"AF":     {"activity_support": 50, "unemployment_benefit": 18, "social_assistance": 17, "other": 5, "none_public": 10},
	"FK":     {"sickness_benefit": 48, "sickness_or_activity_compensation": 35, "social_assistance": 7, "other": 5, "none_public": 5},
	"KOMMUN": {"social_assistance": 72, "activity_support": 10, "other": 6, "none_public": 12},
	"REGION": {"sickness_benefit": 30, "sickness_or_activity_compensation": 25, "social_assistance": 15, "other": 10, "none_public": 20},
	"":       {"none_public": 30, "social_assistance": 25, "other": 20, "activity_support": 15, "sickness_benefit": 10},
}

// supportYearsWeight follows the income before; "" is for any income not listed.
var supportYearsWeight = map[string]map[string]float64{
	"social_assistance":                 {"lt1": 15, "1_4": 40, "ge5": 35, "unknown": 10},
	"sickness_or_activity_compensation": {"lt1": 5, "1_4": 30, "ge5": 55, "unknown": 10},
	"none_public":                       {"lt1": 40, "1_4": 25, "ge5": 10, "unknown": 25},
	"":                                  {"lt1": 25, "1_4": 40, "ge5": 22, "unknown": 13},
}

var methodWeight = map[string]float64{
	"SE": 25, "IPS": 12, "CASE_MANAGEMENT": 14, "BOSTON": 5, "PRE_REHAB": 15,
	"WORK_TRAINING_ASF": 11, "HEALTH_GROUP": 10, "GROUP_SE": 8,
}

const defaultMethodWeight = 5

// methodMonths is the mean length, in months, of a completed episode of the method.
var methodMonths = map[string]float64{
	"SE": 9, "IPS": 10, "CASE_MANAGEMENT": 9, "BOSTON": 11, "PRE_REHAB": 10,
	"WORK_TRAINING_ASF": 6.5, "HEALTH_GROUP": 5.5, "GROUP_SE": 8,
}

const defaultMethodMonths = 8.0

// methodWorkStudies is the chance that a completed episode of the method ends in work or
// studies: the employment methods (SE, IPS) do best, pre-rehabilitation least.
var methodWorkStudies = map[string]float64{
	"SE": 0.36, "IPS": 0.38, "GROUP_SE": 0.30, "CASE_MANAGEMENT": 0.24,
	"WORK_TRAINING_ASF": 0.24, "BOSTON": 0.20, "HEALTH_GROUP": 0.16, "PRE_REHAB": 0.10,
}

const defaultMethodWorkStudies = 0.2

var exitReasonWeight = map[string]float64{"completed": 80, "dropped_out": 12, "moved": 6, "misregistered": 2}

// reasonOutcome is, per exit reason, the chance of work or studies and of an ordinary
// programme (the first only scales the method's chance for completed episodes), and the
// share of the rest that is job seeking.
var reasonOutcome = map[string]struct{ workStudies, ordinary, seeking float64 }{
	"completed":     {1, 0.40, 0.55},
	"dropped_out":   {0.05, 0.25, 0.45},
	"moved":         {0.08, 0.10, 0.40},
	"misregistered": {0, 0, 0},
}

var extentWeight = map[int]float64{25: 10, 50: 25, 75: 20, 100: 45}

// incomeAfterWeight is by outcome; the key "before" stands for the participant's income
// before. Work at 100 % uses "work_full".
var incomeAfterWeight = map[string]map[string]float64{
	"work_full":          {"none_public": 75, "other": 10, "before": 15},
	"work":               {"none_public": 30, "other": 20, "before": 50},
	"studies":            {"other": 65, "none_public": 15, "before": 20},
	"ordinary_programme": {"activity_support": 35, "social_assistance": 5, "other": 10, "before": 50},
	"job_seeking":        {"unemployment_benefit": 20, "activity_support": 30, "social_assistance": 20, "before": 30},
	"":                   {"sickness_or_activity_compensation": 10, "other": 20, "before": 70},
}

// questionAgree is the chance of agreeing (an answer marked agree in survey_answer).
// closer_to_work depends on the outcome of the exit.
var questionAgree = map[string]float64{
	"had_a_say": 0.90, "respected": 0.93, "coordinated": 0.76, "right_support": 0.80,
	questionCloser: 0.55, "better_health": 0.55,
}

const defaultQuestionAgree = 0.75

var closerToWorkAgree = map[string]float64{groupWorkStudies: 0.90, groupOrdinary: 0.62, "": 0.42}

// Rates that are the same everywhere.
const (
	anonymousRate      = 0.03 // registered without consent
	bornAbroadNullRate = 0.02
	secondEpisodeRate  = 0.14 // of those whose first episode has ended
	exitSurveyRate     = 0.80 // of those with an ended episode
	ongoingSurveyRate  = 0.50 // of those still in an episode at the end of the period
	midSurveyRate      = 0.15 // of the others whose first episode lasted four months or more
	itemSkipRate       = 0.02
)

// profile is how an association differs from the federation.
type profile struct {
	women            float64            // chance of gender K
	ageBand          map[string]float64 // weights over age_band codes
	bornAbroad       float64
	referralBoost    map[string]float64 // multiplies referral weights
	methodBoost      map[string]float64 // multiplies method weights
	socialAssistance float64            // extra chance of income before = social assistance
	longSupport      float64            // extra chance of ge5 years on public support
	workFactor       float64            // multiplies the chance of work or studies
	ordinaryFactor   float64            // multiplies the chance of an ordinary programme
}

var baseAgeBand = map[string]float64{"16-24": 18, "25-34": 22, "35-44": 22, "45-54": 24, "55-64": 14}

func baseProfile() profile {
	return profile{women: 0.57, ageBand: baseAgeBand, bornAbroad: 0.40, workFactor: 1, ordinaryFactor: 1}
}

// profiles holds the differences the calibration asks for: hbs refers many through FK,
// VärNa's participants are older and more often women, Södertälje's have been on public
// support longer, Roslagen has fewer exits to work, studies and ordinary programmes.
var profiles = map[string]func(p *profile){
	"stockholm": func(p *profile) {
		p.bornAbroad, p.workFactor = 0.43, 1.05
		p.methodBoost = map[string]float64{"IPS": 1.8, "BOSTON": 1.5}
	},
	"hbs": func(p *profile) {
		p.bornAbroad, p.workFactor = 0.50, 0.95
		p.referralBoost = map[string]float64{"FK": 2.15}
	},
	"ostra-sodertorn": func(p *profile) {
		p.workFactor = 1.2
		p.methodBoost = map[string]float64{"SE": 1.4}
	},
	"sodertalje": func(p *profile) {
		p.bornAbroad, p.workFactor = 0.55, 0.85
		p.socialAssistance, p.longSupport = 0.13, 0.15
		p.methodBoost = map[string]float64{"PRE_REHAB": 1.6}
	},
	"varna": func(p *profile) {
		p.women, p.bornAbroad, p.workFactor = 0.68, 0.25, 1.1
		p.ageBand = map[string]float64{"16-24": 9, "25-34": 16, "35-44": 21, "45-54": 30, "55-64": 24}
	},
	"roslagen": func(p *profile) {
		p.bornAbroad, p.workFactor, p.ordinaryFactor = 0.28, 0.82, 0.76
	},
	"suvs": func(p *profile) {
		p.bornAbroad = 0.42
	},
	"samsund": func(p *profile) {
		p.bornAbroad, p.workFactor = 0.42, 1.05
		p.methodBoost = map[string]float64{"GROUP_SE": 1.5}
	},
}

// picker draws a code with probability proportional to its weight.
type picker struct {
	codes []string
	cum   []float64
}

func (p picker) pick(r *rand.Rand) string {
	x := r.Float64() * p.cum[len(p.cum)-1]
	for i, c := range p.cum {
		if x < c {
			return p.codes[i]
		}
	}
	return p.codes[len(p.codes)-1]
}

// newPicker weighs codes by w; a code w does not name gets def, and w naming a code outside
// codes is an error (the model and the code lists have drifted apart).
func newPicker(list string, codes []string, w map[string]float64, def float64, boost map[string]float64) (picker, error) {
	for c := range w {
		if !contains(codes, c) {
			return picker{}, fmt.Errorf("weight for %q, which is not a code of %s", c, list)
		}
	}
	p := picker{codes: codes, cum: make([]float64, len(codes))}
	total := 0.0
	for i, c := range codes {
		v, ok := w[c]
		if !ok {
			v = def
		}
		if b, ok := boost[c]; ok {
			v *= b
		}
		total += v
		p.cum[i] = total
	}
	if total <= 0 {
		return picker{}, fmt.Errorf("no code of %s has a positive weight", list)
	}
	return p, nil
}

func contains(codes []string, c string) bool { return slices.Contains(codes, c) }

// model is the calibration compiled against the code lists.
type model struct {
	associations []string
	assoc        map[string]*assocModel

	cityDistrict picker
	education    picker
	exitReason   picker
	extent       picker
	incomeBefore map[string]picker // by referral party; "" for the rest
	supportYears map[string]picker // by income before; "" for the rest
	incomeAfter  map[string]picker // by outcome; "" for the rest
	workStudies  []string          // outcome codes in group work_or_studies
	ordinary     []string          // outcome codes in group ordinary_programme
	methodWS     map[string]float64
	methodMonths map[string]float64

	instruments []instrument
	agreeCodes  picker // answers counted as agreement, weighted toward the top
	disagree    picker
}

type instrument struct {
	code      string
	questions []string
}

type assocModel struct {
	id           string
	index        int
	profile      profile
	share        float64
	municipality picker
	ageBand      picker
	ageRange     map[string][2]int
	referral     map[string]picker // by gender
	method       picker
}

// loadModel compiles the model once; an error means the model and the code lists disagree.
var loadModel = sync.OnceValues(func() (*model, error) { return buildModel(schemas.V1()) })

func codeList(s *schemas.Schema, name string) (*schemas.CodeList, error) {
	cl, ok := s.CodeList(name)
	if !ok {
		return nil, fmt.Errorf("code list %s is missing from the schema", name)
	}
	return cl, nil
}

func buildModel(s *schemas.Schema) (*model, error) {
	lists := map[string]*schemas.CodeList{}
	for _, name := range []string{"association", "municipality", "city_district", "gender", "age_band",
		"education", "referral_party", "income_source", "years_on_public_support", "method",
		"exit_reason", "outcome", "survey_instrument", "survey_question", "survey_answer"} {
		cl, err := codeList(s, name)
		if err != nil {
			return nil, err
		}
		lists[name] = cl
	}
	for list, code := range map[string]string{
		"gender": genderWoman, "municipality": stockholmCode, "exit_reason": exitCompleted,
		"income_source": incomeSocial, "years_on_public_support": supportLong, "survey_question": questionCloser,
	} {
		if !lists[list].Contains(code) {
			return nil, fmt.Errorf("code list %s has no code %q, which the synthetic model needs", list, code)
		}
	}
	for _, need := range [][2]string{{"gender", genderMan}, {"income_source", incomeNone},
		{"exit_reason", exitMisregistered}, {"survey_instrument", instrumentOngoing}, {"survey_instrument", instrumentExit},
		{"outcome", outcomeWork}, {"outcome", outcomeStudies}, {"outcome", outcomeSeeking}, {"outcome", outcomeOther}} {
		if !lists[need[0]].Contains(need[1]) {
			return nil, fmt.Errorf("code list %s has no code %q, which the synthetic model needs", need[0], need[1])
		}
	}

	m := &model{associations: lists["association"].Values(), assoc: map[string]*assocModel{}}
	var err error
	for c := range associationShare {
		if !lists["association"].Contains(c) {
			return nil, fmt.Errorf("build the synthetic model: share for %q, which is not a code of association", c)
		}
	}
	for c := range municipalityWeight {
		if !lists["municipality"].Contains(c) {
			return nil, fmt.Errorf("build the synthetic model: weight for %q, which is not a code of municipality", c)
		}
	}
	for c := range profiles {
		if !lists["association"].Contains(c) {
			return nil, fmt.Errorf("build the synthetic model: profile for %q, which is not a code of association", c)
		}
	}

	if m.cityDistrict, err = newPicker("city_district", lists["city_district"].Values(), cityDistrictWeight, 50, nil); err != nil {
		return nil, fmt.Errorf("build the synthetic model: %w", err)
	}
	if m.education, err = newPicker("education", lists["education"].Values(), educationWeight, 5, nil); err != nil {
		return nil, fmt.Errorf("build the synthetic model: %w", err)
	}
	if m.exitReason, err = newPicker("exit_reason", lists["exit_reason"].Values(), exitReasonWeight, 1, nil); err != nil {
		return nil, fmt.Errorf("build the synthetic model: %w", err)
	}
	for reason := range reasonOutcome {
		if !lists["exit_reason"].Contains(reason) {
			return nil, fmt.Errorf("build the synthetic model: outcome rates for %q, which is not a code of exit_reason", reason)
		}
	}
	pcts := make([]int, 0, len(extentWeight))
	for pct := range extentWeight {
		pcts = append(pcts, pct)
	}
	sort.Ints(pcts)
	extents, ew := make([]string, len(pcts)), map[string]float64{}
	for i, pct := range pcts {
		extents[i] = strconv.Itoa(pct)
		ew[extents[i]] = extentWeight[pct]
	}
	m.extent, _ = newPicker("extent", extents, ew, 0, nil)

	income := lists["income_source"].Values()
	m.incomeBefore = map[string]picker{}
	for party, w := range incomeBeforeWeight {
		if party != "" && !lists["referral_party"].Contains(party) {
			return nil, fmt.Errorf("build the synthetic model: income weights for %q, which is not a code of referral_party", party)
		}
		if m.incomeBefore[party], err = newPicker("income_source", income, w, 0, nil); err != nil {
			return nil, fmt.Errorf("build the synthetic model: income before for %q: %w", party, err)
		}
	}
	m.supportYears = map[string]picker{}
	for inc, w := range supportYearsWeight {
		if inc != "" && !lists["income_source"].Contains(inc) {
			return nil, fmt.Errorf("build the synthetic model: support years for %q, which is not a code of income_source", inc)
		}
		if m.supportYears[inc], err = newPicker("years_on_public_support", lists["years_on_public_support"].Values(), w, 0, nil); err != nil {
			return nil, fmt.Errorf("build the synthetic model: support years for %q: %w", inc, err)
		}
	}
	m.incomeAfter = map[string]picker{}
	withBefore := append(append([]string{}, income...), "before")
	for outcome, w := range incomeAfterWeight {
		if outcome != "" && outcome != "work_full" && !lists["outcome"].Contains(outcome) {
			return nil, fmt.Errorf("build the synthetic model: income after for %q, which is not a code of outcome", outcome)
		}
		if m.incomeAfter[outcome], err = newPicker("income_source", withBefore, w, 0, nil); err != nil {
			return nil, fmt.Errorf("build the synthetic model: income after for %q: %w", outcome, err)
		}
	}
	outcome := lists["outcome"]
	m.workStudies = outcome.Where("group", groupWorkStudies)
	m.ordinary = outcome.Where("group", groupOrdinary)
	if !contains(m.workStudies, outcomeWork) || !contains(m.workStudies, outcomeStudies) || len(m.ordinary) == 0 {
		return nil, fmt.Errorf("build the synthetic model: code list outcome needs %s and %s in group %s and a code in group %s",
			outcomeWork, outcomeStudies, groupWorkStudies, groupOrdinary)
	}

	methods := lists["method"].Values()
	for _, table := range []map[string]float64{methodWeight, methodMonths, methodWorkStudies} {
		for c := range table {
			if !contains(methods, c) {
				return nil, fmt.Errorf("build the synthetic model: method figure for %q, which is not a code of method", c)
			}
		}
	}
	m.methodWS, m.methodMonths = methodWorkStudies, methodMonths

	// Surveys: each instrument asks the questions whose instruments attribute names it.
	for _, inst := range lists["survey_instrument"].Values() {
		in := instrument{code: inst}
		for _, q := range lists["survey_question"].Codes {
			for _, name := range strings.Split(q.Attrs["instruments"], ",") {
				if strings.TrimSpace(name) == inst {
					in.questions = append(in.questions, q.Code)
				}
			}
		}
		m.instruments = append(m.instruments, in)
	}
	for q := range questionAgree {
		if !lists["survey_question"].Contains(q) {
			return nil, fmt.Errorf("build the synthetic model: agreement for %q, which is not a code of survey_question", q)
		}
	}
	var agree, disagree []string
	for _, c := range lists["survey_answer"].Codes {
		if c.Attrs["agree"] == "true" {
			agree = append(agree, c.Code)
		} else {
			disagree = append(disagree, c.Code)
		}
	}
	if len(agree) == 0 || len(disagree) == 0 {
		return nil, fmt.Errorf("build the synthetic model: survey_answer needs answers marked agree and answers not marked")
	}
	// Within each side, later (more agreeing) answers are a little more common.
	aw, dw := map[string]float64{}, map[string]float64{}
	for i, c := range agree {
		aw[c] = 1 + 0.25*float64(i)
	}
	for i, c := range disagree {
		dw[c] = 1 + float64(i)
	}
	m.agreeCodes, _ = newPicker("survey_answer", agree, aw, 0, nil)
	m.disagree, _ = newPicker("survey_answer", disagree, dw, 0, nil)

	// Associations.
	ages := lists["age_band"]
	ageRange := map[string][2]int{}
	for _, b := range ages.Codes {
		hi := 64
		if b.Max != nil {
			hi = *b.Max
		}
		ageRange[b.Code] = [2]int{*b.Min, hi}
	}
	shareTotal := 0.0
	for i, a := range m.associations {
		p := baseProfile()
		if f, ok := profiles[a]; ok {
			f(&p)
		}
		am := &assocModel{id: a, index: i, profile: p, ageRange: ageRange, referral: map[string]picker{}}
		am.share = defaultAssociationShare
		if v, ok := associationShare[a]; ok {
			am.share = v
		}
		shareTotal += am.share
		muns := lists["municipality"].Where("association", a)
		if len(muns) == 0 {
			return nil, fmt.Errorf("build the synthetic model: association %s has no municipality", a)
		}
		mw := map[string]float64{}
		for _, c := range muns {
			if w, ok := municipalityWeight[c]; ok {
				mw[c] = w
			}
		}
		if am.municipality, err = newPicker("municipality", muns, mw, 30, nil); err != nil {
			return nil, fmt.Errorf("build the synthetic model: municipalities of %s: %w", a, err)
		}
		if am.ageBand, err = newPicker("age_band", ages.Values(), p.ageBand, 0, nil); err != nil {
			return nil, fmt.Errorf("build the synthetic model: ages in %s: %w", a, err)
		}
		for g, w := range referralWeight {
			if am.referral[g], err = newPicker("referral_party", lists["referral_party"].Values(), w, 1, p.referralBoost); err != nil {
				return nil, fmt.Errorf("build the synthetic model: referrals in %s: %w", a, err)
			}
		}
		if am.method, err = newPicker("method", methods, methodWeight, defaultMethodWeight, p.methodBoost); err != nil {
			return nil, fmt.Errorf("build the synthetic model: methods in %s: %w", a, err)
		}
		for c := range p.methodBoost {
			if !contains(methods, c) {
				return nil, fmt.Errorf("build the synthetic model: method boost in %s for %q, which is not a code of method", a, c)
			}
		}
		m.assoc[a] = am
	}
	for _, am := range m.assoc {
		am.share /= shareTotal
	}
	return m, nil
}
