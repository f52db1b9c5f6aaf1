package secagg

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"
)

type member struct {
	id   string
	priv *ecdh.PrivateKey
}

func cohort(t *testing.T, n int) ([]member, map[string]*ecdh.PublicKey) {
	t.Helper()
	var ms []member
	pubs := map[string]*ecdh.PublicKey{}
	for i := range n {
		secret := make([]byte, 32)
		_, err := rand.Read(secret)
		require.NoError(t, err)
		k, err := DeriveKey(secret)
		require.NoError(t, err)
		id := fmt.Sprintf("a%02d", i)
		ms = append(ms, member{id, k})
		pubs[id] = k.PublicKey()
	}
	return ms, pubs
}

func round(ms []member, length, r int) Round {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.id
	}
	return Round{Study: "s1", QueryID: "q", QueryHash: "h", Params: "from=2021-01-01", Cohort: ids, Round: r, Length: length}
}

func TestMasksCancelInTheCohortsSum(t *testing.T) {
	for _, n := range []int{2, 3, 8} {
		t.Run(fmt.Sprint(n, " nodes"), func(t *testing.T) {
			ms, pubs := cohort(t, n)
			r := round(ms, 50, 1)
			want := make([]uint64, r.Length)
			var masked [][]uint64
			for i, m := range ms {
				vec := make([]uint64, r.Length)
				for j := range vec {
					vec[j] = uint64(i*100 + j)
					if j%7 == 0 {
						vec[j] = Fixed(-12.5 * float64(i+1)) // negative fixed-point sums wrap and come back
					}
					want[j] += vec[j]
				}
				out, err := Mask(m.id, m.priv, pubs, r, vec)
				require.NoError(t, err)
				require.NotEqual(t, vec, out)
				masked = append(masked, out)
			}
			got, err := Sum(masked...)
			require.NoError(t, err)
			require.Equal(t, want, got)
			// Every proper part of the cohort sums to noise.
			partial, err := Sum(masked[:n-1]...)
			require.NoError(t, err)
			plain := make([]uint64, r.Length)
			for i := range n - 1 {
				for j := range plain {
					plain[j] += uint64(i*100 + j)
				}
			}
			same := 0
			for j := range plain {
				if j%7 != 0 && partial[j] == plain[j] {
					same++
				}
			}
			require.Zero(t, same, "a proper subset of the cohort must not unmask")
		})
	}
}

func TestFixedPointRoundTrips(t *testing.T) {
	for _, x := range []float64{0, 1, -1, 12.5, -3.25, 1e9, -1e9} {
		require.InDelta(t, x, Float(Fixed(x)), 1.0/Scale)
	}
	require.InDelta(t, -2.5, Float(Fixed(1.5)+Fixed(-4)), 1e-9)
}

// TestMaskedVectorLooksUniformWhateverTheCells: a masked vector of all zeros and one of
// large counts are both indistinguishable from uniform: a chi-square test on every byte
// position over 4,096 elements stays below its critical value (0.1 % over all 16 tests).
func TestMaskedVectorLooksUniformWhateverTheCells(t *testing.T) {
	ms, pubs := cohort(t, 3)
	r := round(ms, 4096, 1)
	for _, name := range []string{"zeros", "counts"} {
		vec := make([]uint64, r.Length)
		if name == "counts" {
			for j := range vec {
				vec[j] = uint64(j % 11)
			}
		}
		out, err := Mask(ms[1].id, ms[1].priv, pubs, r, vec)
		require.NoError(t, err)
		for pos := range 8 {
			var hist [256]float64
			for _, v := range out {
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], v)
				hist[b[pos]]++
			}
			exp := float64(len(out)) / 256
			chi := 0.0
			for _, h := range hist {
				chi += (h - exp) * (h - exp) / exp
			}
			// 255 degrees of freedom, 16 tests (two vectors, eight bytes) at 0.1 % overall:
			// the critical value for 0.006 % each is about 352 (Wilson–Hilferty).
			require.Less(t, chi, 352.0, "%s: byte %d", name, pos)
		}
	}
}

func TestRoundsAndQueriesGetFreshMasks(t *testing.T) {
	ms, pubs := cohort(t, 3)
	zero := make([]uint64, 16)
	base := round(ms, 16, 1)
	first, err := Mask(ms[0].id, ms[0].priv, pubs, base, zero)
	require.NoError(t, err)
	again, err := Mask(ms[0].id, ms[0].priv, pubs, base, zero)
	require.NoError(t, err)
	require.Equal(t, first, again, "the same round masks the same way (a retried answer is the same message)")
	variants := map[string]Round{}
	r := base
	r.Round = 2
	variants["round"] = r
	r = base
	r.Params = "from=2022-01-01"
	variants["params"] = r
	r = base
	r.Study = "s2"
	variants["study"] = r
	r = base
	r.QueryHash = "other"
	variants["query hash"] = r
	for name, v := range variants {
		out, err := Mask(ms[0].id, ms[0].priv, pubs, v, zero)
		require.NoError(t, err)
		for j := range out {
			require.NotEqual(t, first[j], out[j], "%s changes every mask element", name)
		}
	}
}

func TestMaskRefusesWhatItCannotMask(t *testing.T) {
	ms, pubs := cohort(t, 3)
	r := round(ms, 4, 1)
	vec := make([]uint64, 4)
	_, err := Mask("outsider", ms[0].priv, pubs, r, vec)
	require.ErrorIs(t, err, ErrNotInCohort)
	delete(pubs, ms[2].id)
	_, err = Mask(ms[0].id, ms[0].priv, pubs, r, vec)
	require.ErrorIs(t, err, ErrNoPeerKey)
	bad := r
	bad.Cohort = []string{ms[1].id, ms[0].id}
	_, err = Mask(ms[0].id, ms[0].priv, pubs, bad, vec)
	require.ErrorIs(t, err, ErrCohort)
	bad.Cohort = []string{ms[0].id}
	_, err = Mask(ms[0].id, ms[0].priv, pubs, bad, vec)
	require.ErrorIs(t, err, ErrCohort)
	_, err = Mask(ms[0].id, ms[0].priv, pubs, r, make([]uint64, 3))
	require.Error(t, err)
}

// A coordinator that hands a node a key of its own choosing instead of a peer's cannot
// unmask: nodes take peer keys only from their own pinned configuration, and a substituted
// key leaves the sum masked.
func TestSubstitutedPeerKeyLeavesTheSumMasked(t *testing.T) {
	ms, pubs := cohort(t, 3)
	r := round(ms, 32, 1)
	evil, err := DeriveKey(slices.Repeat([]byte{7}, 32))
	require.NoError(t, err)
	var masked [][]uint64
	for i, m := range ms {
		p := pubs
		if i == 0 {
			p = map[string]*ecdh.PublicKey{ms[1].id: evil.PublicKey(), ms[2].id: pubs[ms[2].id]}
		}
		out, err := Mask(m.id, m.priv, p, r, make([]uint64, r.Length))
		require.NoError(t, err)
		masked = append(masked, out)
	}
	sum, err := Sum(masked...)
	require.NoError(t, err)
	zeros := 0
	for _, v := range sum {
		if v == 0 {
			zeros++
		}
	}
	require.Zero(t, zeros)
}

func TestDeriveKeyIsStableAndParses(t *testing.T) {
	secret := slices.Repeat([]byte{1}, 32)
	a, err := DeriveKey(secret)
	require.NoError(t, err)
	b, err := DeriveKey(secret)
	require.NoError(t, err)
	require.True(t, a.Equal(b))
	p, err := ParsePublic(PublicHex(a.PublicKey()))
	require.NoError(t, err)
	require.True(t, p.Equal(a.PublicKey()))
	_, err = ParsePublic("zz")
	require.Error(t, err)
	_, err = DeriveKey([]byte{1})
	require.Error(t, err)
	require.False(t, math.IsNaN(Float(0)))
}
