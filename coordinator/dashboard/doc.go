// Package dashboard serves the steering group's dashboard from the coordinator: static pages
// embedded in the binary (with Chart.js vendored from the npm registry, nothing from a CDN)
// that read released results through the coordinator's API with the user's bearer token, and
// the municipality tile layout from the code lists.
//
// It must never show anything but released, merged results, never compute a rate from a
// suppressed count, and never keep the token beyond the browser session.
package dashboard
