package lint

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest document and where it came from.
type Object struct {
	File string // base name of the file
	Doc  int    // 1-based index of the document in the file
	Obj  runtime.Object
}

func (o Object) String() string {
	return fmt.Sprintf("%s#%d %s", o.File, o.Doc, describe(o.Obj))
}

func describe(obj runtime.Object) string {
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	if m, ok := obj.(metav1.Object); ok {
		return kind + "/" + m.GetName()
	}
	return kind
}

// strict decodes YAML into the client-go scheme's typed objects and fails on unknown or
// duplicate fields, as `kubectl apply --validate=strict` does.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// DecodeFile decodes every document of a manifest file strictly into typed objects.
func DecodeFile(path string) ([]Object, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []Object
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		out = append(out, Object{File: filepath.Base(path), Doc: n, Obj: obj})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no manifest in the file", path)
	}
	return out, nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Kustomization is the part of kustomization.yaml this package reads. It is decoded strictly:
// a field used in the file but unknown here must be added here first.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// DecodeDir reads dir/kustomization.yaml and decodes every resource it lists. It fails on a
// *.yaml file in dir that the kustomization does not list, and on a listed file that is missing.
func DecodeDir(dir string) ([]Object, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read kustomization: %w", err)
	}
	var k Kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "kustomization.yaml"), err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		return nil, fmt.Errorf("%s: expected kind Kustomization of kustomize.config.k8s.io/v1beta1", dir)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(k.Resources, b) {
			errs = append(errs, fmt.Errorf("%s: not listed in kustomization.yaml resources", f))
		}
	}
	var out []Object
	for _, res := range k.Resources {
		objs, err := DecodeFile(filepath.Join(dir, res))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, objs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// UID is the user and group every Samsyn container runs as (deploy/container/Dockerfile).
const UID = 10001

// Check applies the project's rules to decoded manifests: every pod and container hardened the
// same way, with probes and resources; every Secret volume at most 0440; every NetworkPolicy
// selecting a pod, and every same-namespace peer it names matching a pod.
func Check(objs []Object) error {
	var errs []error
	type pod struct {
		at     Object
		labels labels.Set
		spec   *corev1.PodSpec
	}
	var pods []pod
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			pods = append(pods, pod{o, v.Spec.Template.Labels, &v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			pods = append(pods, pod{o, v.Spec.Template.Labels, &v.Spec.Template.Spec})
		case *appsv1.DaemonSet, *corev1.Pod, *appsv1.ReplicaSet:
			errs = append(errs, fmt.Errorf("%s: only Deployments and StatefulSets are checked here: add a case", o))
		}
	}
	for _, p := range pods {
		for _, err := range checkPod(p.spec) {
			errs = append(errs, fmt.Errorf("%s: %w", p.at, err))
		}
	}
	matches := func(sel *metav1.LabelSelector) (bool, error) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false, err
		}
		for _, p := range pods {
			if s.Matches(p.labels) {
				return true, nil
			}
		}
		return false, nil
	}
	for _, o := range objs {
		np, ok := o.Obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sels := []*metav1.LabelSelector{&np.Spec.PodSelector}
		for _, r := range np.Spec.Ingress {
			for _, peer := range r.From {
				if peer.PodSelector != nil && peer.NamespaceSelector == nil {
					sels = append(sels, peer.PodSelector)
				}
			}
		}
		for _, r := range np.Spec.Egress {
			for _, peer := range r.To {
				if peer.PodSelector != nil && peer.NamespaceSelector == nil {
					sels = append(sels, peer.PodSelector)
				}
			}
		}
		for _, sel := range sels {
			ok, err := matches(sel)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: selector %s: %w", o, metav1.FormatLabelSelector(sel), err))
			} else if !ok {
				errs = append(errs, fmt.Errorf("%s: selector %s matches no pod", o, metav1.FormatLabelSelector(sel)))
			}
		}
	}
	return errors.Join(errs...)
}

func checkPod(spec *corev1.PodSpec) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		fail("automountServiceAccountToken: expected false")
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&^0o440 != 0 {
			fail("volume %s: secret defaultMode %s: expected 0440 or stricter", v.Name, mode(v.Secret.DefaultMode))
		}
		for _, it := range v.Secret.Items {
			if it.Mode != nil && *it.Mode&^0o440 != 0 {
				fail("volume %s: item %s mode %s: expected 0440 or stricter", v.Name, it.Key, mode(it.Mode))
			}
		}
	}
	type ctr struct {
		c    corev1.Container
		init bool
	}
	var all []ctr
	for _, c := range spec.InitContainers {
		all = append(all, ctr{c, true})
	}
	for _, c := range spec.Containers {
		all = append(all, ctr{c, false})
	}
	for _, x := range all {
		c := x.c
		at := "container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			fail("%s: securityContext missing", at)
			continue
		}
		if !firstBool(sc.RunAsNonRoot, psc.RunAsNonRoot) {
			fail("%s: runAsNonRoot: expected true", at)
		}
		if u := firstInt(sc.RunAsUser, psc.RunAsUser); u == nil || *u != UID {
			fail("%s: runAsUser: expected %d", at, UID)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("%s: allowPrivilegeEscalation: expected false", at)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			fail("%s: readOnlyRootFilesystem: expected true", at)
		}
		if sc.Privileged != nil && *sc.Privileged {
			fail("%s: privileged: expected false", at)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			fail("%s: capabilities: expected drop [ALL] and nothing added", at)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			fail("%s: seccompProfile: expected RuntimeDefault", at)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				fail("%s: resources.requests.%s missing", at, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				fail("%s: resources.limits.%s missing", at, r)
			}
		}
		if !x.init && (c.LivenessProbe == nil || c.ReadinessProbe == nil) {
			fail("%s: livenessProbe and readinessProbe: expected both", at)
		}
	}
	return errs
}

func mode(m *int32) string {
	if m == nil {
		return "unset (0644)"
	}
	return fmt.Sprintf("%04o", *m)
}

func firstBool(vs ...*bool) bool {
	for _, v := range vs {
		if v != nil {
			return *v
		}
	}
	return false
}

func firstInt(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// ConfigFiles maps the name of every ConfigMap that holds a file called name to its content.
func ConfigFiles(objs []Object, name string) map[string]string {
	out := map[string]string{}
	for _, o := range objs {
		if cm, ok := o.Obj.(*corev1.ConfigMap); ok {
			if v, ok := cm.Data[name]; ok {
				out[cm.Name] = v
			}
		}
	}
	return out
}
