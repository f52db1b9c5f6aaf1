// Package lint checks the deployment files offline, with the parsers of the tools that will
// read them: the Kubernetes manifests in deploy/kubernetes are decoded strictly into
// Kubernetes' own API types (an unknown field, a wrong type or an unknown kind fails), the
// daemons' configuration files in their ConfigMaps are loaded by the daemons' own strict
// loaders, and deploy/container/Dockerfile is parsed and linted by BuildKit's Dockerfile
// frontend, as `docker build --check` would. On top of that it checks the project's rules:
// every container hardened the same way, no Secret readable by others, no NetworkPolicy that
// selects nothing, no manifest left out of kustomization.yaml.
//
// It is a module of its own (like deploy/adbc) so that the Kubernetes and BuildKit modules never
// enter the main module's go.mod. It never talks to a cluster, a registry or a Docker engine:
// base images are not pulled, so the rules that need an image's contents are not run.
package lint
