package lint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
)

// offlineImages answers every base image with an empty Linux image config, so that the
// frontend's lint runs without a registry. Rules that depend on a base image's own
// configuration (its ENV, its platform) therefore see an empty image.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	return ref, "", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},"config":{}}`), nil
}

// LintDockerfile parses and lints a Dockerfile with BuildKit's frontend (the code behind
// `docker build --check`): a parse error, an unknown instruction or any lint warning is an
// error. Then it checks the project's rules on the final stage.
func LintDockerfile(ctx context.Context, path string) error {
	dt, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read Dockerfile: %w", err)
	}
	sm := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	sm.Definition = &llb.Definition{} // the lint results name their source by it
	res, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		Config:       dockerui.Config{},
		SourceMap:    sm,
		MetaResolver: offlineImages{},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	if res.Error != nil {
		errs = append(errs, fmt.Errorf("%s:%s: %s", path, line(res.Error.Location.Ranges), res.Error.Message))
	}
	for _, w := range res.Warnings {
		var at string
		if w.Location != nil {
			at = line(w.Location.Ranges)
		}
		errs = append(errs, fmt.Errorf("%s:%s: %s: %s", path, at, w.RuleName, w.Detail))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return checkFinalStage(path, dt)
}

func line[R interface{ GetStart() S }, S interface{ GetLine() int32 }](ranges []R) string {
	if len(ranges) == 0 {
		return "0"
	}
	return fmt.Sprint(ranges[0].GetStart().GetLine())
}

// checkFinalStage requires the image to run samsyn as the unprivileged user, in exec form.
func checkFinalStage(path string, dt []byte) error {
	ast, err := parser.Parse(strings.NewReader(string(dt)))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(stages) == 0 {
		return fmt.Errorf("%s: no stage", path)
	}
	final := stages[len(stages)-1]
	var user string
	var entry *instructions.EntrypointCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = c
		}
	}
	var errs []error
	if want := fmt.Sprintf("%d:%d", UID, UID); user != want {
		errs = append(errs, fmt.Errorf("%s: final stage USER %q: expected %s", path, user, want))
	}
	if entry == nil || entry.PrependShell || len(entry.CmdLine) != 1 || entry.CmdLine[0] != "samsyn" {
		errs = append(errs, fmt.Errorf(`%s: final stage ENTRYPOINT: expected ["samsyn"] in exec form`, path))
	}
	return errors.Join(errs...)
}
