package lint

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	coordconfig "github.com/samsyn/samsyn/coordinator/config"
	nodeconfig "github.com/samsyn/samsyn/node/config"
)

const (
	manifests  = "../kubernetes"
	dockerfile = "../container/Dockerfile"
)

func TestManifestsDecodeStrictlyAndKeepTheRules(t *testing.T) {
	objs, err := DecodeDir(manifests)
	require.NoError(t, err)
	require.NoError(t, Check(objs))

	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Obj.GetObjectKind().GroupVersionKind().Kind]++
	}
	// What the folder must hold, so that a rule is never checked over nothing.
	require.Equal(t, map[string]int{"Namespace": 1, "ConfigMap": 2, "PersistentVolumeClaim": 1,
		"Deployment": 1, "StatefulSet": 1, "Service": 2, "NetworkPolicy": 3}, kinds)
}

// The daemons' own strict loaders read the files in the ConfigMaps: a key that
// node/config or coordinator/config does not know, or a value they refuse, fails here.
func TestConfigMapsLoadWithTheDaemonsLoaders(t *testing.T) {
	objs, err := DecodeDir(manifests)
	require.NoError(t, err)
	nodes := ConfigFiles(objs, nodeconfig.FileName)
	coords := ConfigFiles(objs, "coordinator.yaml")
	require.Len(t, nodes, 1)
	require.Len(t, coords, 1)
	for name, body := range nodes {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, loadNode(t, body))
			err := loadNode(t, body+"listne: 0.0.0.0:7001\n")
			require.ErrorContains(t, err, "field listne not found", "a misspelt key must fail")
		})
	}
	for name, body := range coords {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, loadCoordinator(t, body))
			err := loadCoordinator(t, strings.Replace(body, "ticket_key:", "ticket_keys:", 1))
			require.ErrorContains(t, err, "field ticket_keys not found", "a misspelt key must fail")
		})
	}
}

func loadNode(t *testing.T, body string) error {
	path := filepath.Join(t.TempDir(), nodeconfig.FileName)
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	cfg, err := nodeconfig.Load(path)
	if err != nil {
		return err
	}
	return cfg.ValidateServe()
}

func loadCoordinator(t *testing.T, body string) error {
	path := filepath.Join(t.TempDir(), "coordinator.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	_, err := coordconfig.Load(path)
	return err
}

func TestDockerfileParsesAndLintsClean(t *testing.T) {
	require.NoError(t, LintDockerfile(context.Background(), dockerfile))
}

// Each bad file breaks one thing in testdata/good/pod.yaml, which passes.
func TestBadManifestsFail(t *testing.T) {
	objs, err := DecodeFile("testdata/good/pod.yaml")
	require.NoError(t, err)
	require.NoError(t, Check(objs))

	cases := map[string]string{
		"unknown-field.yaml":          `unknown field "spec.replica"`,
		"wrong-type.yaml":             `cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32`,
		"unknown-kind.yaml":           `no kind "Deploymnet" is registered`,
		"no-securitycontext.yaml":     "container good: securityContext missing",
		"root.yaml":                   "container good: runAsNonRoot: expected true",
		"secret-mode.yaml":            "volume keys: secret defaultMode 0644: expected 0440 or stricter",
		"policy-selects-nothing.yaml": "NetworkPolicy/good: selector app=godo matches no pod",
	}
	files, err := filepath.Glob("testdata/bad/*.yaml")
	require.NoError(t, err)
	require.Len(t, files, len(cases), "every bad file has a case and every case a file")
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			objs, err := DecodeFile(filepath.Join("testdata/bad", name))
			if err == nil {
				err = Check(objs)
			}
			require.ErrorContains(t, err, want)
		})
	}
}

func TestRootAndEscalationAreBothReported(t *testing.T) {
	objs, err := DecodeFile("testdata/bad/root.yaml")
	require.NoError(t, err)
	err = Check(objs)
	require.ErrorContains(t, err, "runAsUser: expected 10001")
	require.ErrorContains(t, err, "allowPrivilegeEscalation: expected false")
}

func TestKustomizationListsEveryFile(t *testing.T) {
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(manifests, "*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(f)), raw, 0o600))
	}
	_, err = DecodeDir(dir)
	require.NoError(t, err, "the copy decodes as the original")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "extra.yaml"), []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"), 0o600))
	_, err = DecodeDir(dir)
	require.ErrorContains(t, err, "extra.yaml: not listed in kustomization.yaml resources")

	require.NoError(t, os.Remove(filepath.Join(dir, "extra.yaml")))
	require.NoError(t, os.Remove(filepath.Join(dir, "networkpolicy.yaml")))
	_, err = DecodeDir(dir)
	require.ErrorContains(t, err, "networkpolicy.yaml: no such file")
}

func TestBadDockerfilesFail(t *testing.T) {
	cases := map[string][]string{
		"unknown-instruction.Dockerfile": {"unknown instruction: RUNN"},
		"lint-warning.Dockerfile":        {"FromAsCasing", "JSONArgsRecommended"},
		"root.Dockerfile":                {`final stage USER "": expected 10001:10001`},
	}
	files, err := filepath.Glob("testdata/bad/*.Dockerfile")
	require.NoError(t, err)
	require.Len(t, files, len(cases), "every bad file has a case and every case a file")
	for name, wants := range cases {
		t.Run(name, func(t *testing.T) {
			err := LintDockerfile(context.Background(), filepath.Join("testdata/bad", name))
			for _, want := range wants {
				require.ErrorContains(t, err, want)
			}
		})
	}
}
