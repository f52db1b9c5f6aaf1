// Package keyfile reads and writes the ed25519 signing keys of the catalog authority, the
// associations' data owners and the coordinator as PEM files: private keys as PKCS#8
// "PRIVATE KEY" blocks, public keys as PKIX "PUBLIC KEY" blocks.
//
// It is for cmd/ only. It must never overwrite a key file, never write a private key readable
// by anyone but its owner, never load a private key that others can read, and never put key
// material in an error or a log line: errors name the file and what was expected.
package keyfile
