// Package mtls owns the federation's mutual-TLS identities: a small certificate authority
// that issues node and coordinator certificates, and the TLS configurations both daemons use,
// which accept a peer only if its certificate chains to the federation CA and names the
// expected identity.
//
// Identities are URIs in the certificate's subject alternative names: samsyn://node/<id> and
// samsyn://coordinator/<id>. This package must never accept a peer without a verified chain,
// never fall back to a TLS version below 1.3, and never write a private key readable by others.
package mtls
